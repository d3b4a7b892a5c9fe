"""TRPO step: CG against numpy.linalg.solve, the Fisher product against its closed form for a
linear-Gaussian policy, the line search on hand-computed cases, and the whole step against a
NumPy natural-gradient step, under jit, without retracing, and under vmap."""

import operator

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ppo_jax import trpo
from ppo_jax.distribution import DiagonalGaussian

N, OBS, ACT = 256, 3, 2
MAX_KL = 0.01


def random_spd(seed, n=8):
  m = np.random.default_rng(seed).normal(size=(n, n))
  return (m @ m.T + np.eye(n)).astype(np.float32)


# A linear-Gaussian policy: mean = obs @ w.T, std = exp(log_std), shared over states.


def policy(params, obs):
  mean = obs @ params["w"].T
  return DiagonalGaussian(mean, jnp.broadcast_to(jnp.exp(params["log_std"]), mean.shape))


def make_problem(seed, advantage_scale=1.0):
  """Old params, rollout data and (surrogate_fn, kl_fn) closures around the old policy."""
  rng = np.random.default_rng(seed)
  params = {
    "w": rng.normal(size=(ACT, OBS)).astype(np.float32),
    "log_std": np.log(rng.uniform(0.3, 0.8, size=ACT)).astype(np.float32),
  }
  obs = rng.normal(size=(N, OBS)).astype(np.float32)
  std = np.exp(params["log_std"])
  mean = obs @ params["w"].T
  actions = (mean + std * rng.normal(size=(N, ACT))).astype(np.float32)
  # Rewards one direction of action noise, so the gradient moves mean and std.
  advantages = advantage_scale * ((actions - mean) @ np.array([1.0, -0.5]) + 0.2)
  data = dict(obs=obs, actions=actions, advantages=advantages.astype(np.float32))
  return params, data


def make_fns(params_old, obs, actions, advantages):
  old = jax.lax.stop_gradient(policy(params_old, obs))
  log_prob_old = old.log_prob(actions)

  def surrogate_fn(params):
    return jnp.mean(jnp.exp(policy(params, obs).log_prob(actions) - log_prob_old) * advantages)

  def kl_fn(params):
    return jnp.mean(old.kl(policy(params, obs)))

  return surrogate_fn, kl_fn


# NumPy references, in float64.


def fisher_product_reference(params, obs, v, damping):
  """Closed-form Fisher of the linear-Gaussian policy: mean block E[x x^T] / sigma_a^2 per
  action row, log-std block 2 I, no cross terms."""
  variance = np.exp(2.0 * np.float64(params["log_std"]))
  second_moment = np.float64(obs).T @ np.float64(obs) / len(obs)
  return {
    "w": (np.float64(v["w"]) @ second_moment) / variance[:, None] + damping * v["w"],
    "log_std": (2.0 + damping) * np.float64(v["log_std"]),
  }


def surrogate_grad_reference(params, obs, actions, advantages):
  obs, actions, advantages = (np.float64(x) for x in (obs, actions, advantages))
  variance = np.exp(2.0 * np.float64(params["log_std"]))
  noise = actions - obs @ np.float64(params["w"]).T
  return {
    "w": (advantages[:, None] * noise / variance).T @ obs / len(obs),
    "log_std": np.mean(advantages[:, None] * (noise**2 / variance - 1.0), axis=0),
  }


def gaussian_kl_reference(params_old, params_new, obs):
  mean_old, mean_new = (np.float64(obs) @ np.float64(p["w"]).T for p in (params_old, params_new))
  var_old, var_new = (np.exp(2.0 * np.float64(p["log_std"])) for p in (params_old, params_new))
  per_dim = 0.5 * (
    var_old / var_new + (mean_new - mean_old) ** 2 / var_new - 1.0 - np.log(var_old / var_new)
  )
  return per_dim.sum(axis=-1).mean()


def natural_step_reference(params, data, damping):
  """Full TRPO step (F + damping I)^-1 g scaled to 0.5 step^T (F + damping I) step = MAX_KL."""
  grad = surrogate_grad_reference(params, data["obs"], data["actions"], data["advantages"])
  g, unravel = ravel_pytree(grad)
  g = np.float64(g)

  def fvp_flat(v):
    return np.float64(
      ravel_pytree(fisher_product_reference(params, data["obs"], unravel(v), damping))[0]
    )

  fisher = np.stack([fvp_flat(e) for e in np.eye(len(g))], axis=1)
  s = np.linalg.solve(fisher, g)
  return unravel(np.sqrt(2.0 * MAX_KL / (s @ fisher @ s)) * s)


# Conjugate gradient.


def test_cg_matches_numpy_solve_on_flat_vectors():
  a = random_spd(0)
  b = np.random.default_rng(1).normal(size=8).astype(np.float32)
  result = jax.jit(lambda b: trpo.conjugate_gradient(lambda x: a @ x, b, 30))(b)
  expected = np.linalg.solve(np.float64(a), np.float64(b))
  np.testing.assert_allclose(result.x, expected, rtol=1e-4, atol=1e-5)
  assert result.residual_norm**2 <= 1e-10
  assert 1 <= int(result.iterations_run) <= 30


def test_cg_matches_numpy_solve_on_a_pytree():
  a = random_spd(2)
  b_flat = np.random.default_rng(3).normal(size=8).astype(np.float32)

  # The pytree is laid out by hand (w row-major, then bias), independent of ravel_pytree.
  def to_tree(x):
    return {"w": x[:6].reshape(2, 3), "bias": x[6:]}

  def matvec(tree):
    return to_tree(a @ jnp.concatenate([tree["w"].reshape(-1), tree["bias"]]))

  result = trpo.conjugate_gradient(matvec, to_tree(b_flat), 30)
  expected = to_tree(np.linalg.solve(np.float64(a), np.float64(b_flat)))
  chex.assert_trees_all_equal_shapes(result.x, expected)
  for name in expected:
    np.testing.assert_allclose(result.x[name], expected[name], rtol=1e-4, atol=1e-5)


def test_cg_stops_after_one_iteration_on_the_identity():
  b = np.random.default_rng(4).normal(size=5).astype(np.float32)
  result = trpo.conjugate_gradient(lambda x: x, b, 10)
  assert int(result.iterations_run) == 1
  np.testing.assert_allclose(result.x, b, rtol=1e-6)
  assert float(result.residual_norm) == 0.0


def test_cg_runs_exactly_the_cap_and_reports_the_true_residual():
  a = random_spd(5)
  b = np.random.default_rng(6).normal(size=8).astype(np.float32)
  result = trpo.conjugate_gradient(lambda x: a @ x, b, 3)
  assert int(result.iterations_run) == 3
  true_residual = np.linalg.norm(np.float64(b) - np.float64(a) @ np.float64(result.x))
  np.testing.assert_allclose(result.residual_norm, true_residual, rtol=1e-3)
  assert true_residual > 1e-3


def test_cg_on_a_zero_right_hand_side_does_nothing():
  result = trpo.conjugate_gradient(lambda x: 2.0 * x, np.zeros(4, np.float32), 10)
  assert int(result.iterations_run) == 0
  np.testing.assert_array_equal(result.x, np.zeros(4))


# Fisher-vector product.


def test_fisher_vector_product_matches_the_closed_form_fisher():
  params, data = make_problem(0)
  _, kl_fn = make_fns(params, data["obs"], data["actions"], data["advantages"])
  rng = np.random.default_rng(1)
  v = {name: rng.normal(size=x.shape).astype(np.float32) for name, x in params.items()}
  damping = 0.1

  # The premise of the whole method: at the old params the KL is 0 with zero gradient.
  kl, grad = jax.jit(jax.value_and_grad(kl_fn))(params)
  np.testing.assert_allclose(kl, 0.0, atol=1e-6)
  chex.assert_trees_all_close(grad, jax.tree.map(np.zeros_like, params), atol=1e-6)

  got = jax.jit(lambda p, v: trpo.fisher_vector_product(kl_fn, p, damping)(v))(params, v)
  expected = fisher_product_reference(params, data["obs"], v, damping)
  for name in params:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5)


def test_fisher_vector_product_is_the_damped_hessian_away_from_the_old_params():
  params, data = make_problem(1)
  _, kl_fn = make_fns(params, data["obs"], data["actions"], data["advantages"])
  at = jax.tree.map(lambda x: x + np.float32(0.3), params)
  flat_at, unravel = ravel_pytree(at)
  v_flat = np.random.default_rng(2).normal(size=flat_at.shape).astype(np.float32)
  damping = 0.05

  hessian = jax.jit(jax.hessian(lambda x: kl_fn(unravel(x))))(flat_at)
  fvp = jax.jit(lambda p, v: trpo.fisher_vector_product(kl_fn, p, damping)(v))
  got = ravel_pytree(fvp(at, unravel(v_flat)))[0]
  expected = np.float64(hessian) @ np.float64(v_flat) + damping * np.float64(v_flat)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# Line search on a quadratic KL 0.5 |p - old|^2 and a linear surrogate g . p.


def quadratic_problem(direction):
  old = {
    "a": np.array([0.3, -1.7], np.float32),
    "b": np.array([[0.123456], [2.5]], np.float32),
  }
  step = {"a": np.ones(2, np.float32), "b": np.ones((2, 1), np.float32)}  # |step|^2 = 4

  def kl_fn(p):
    return 0.5 * sum(jnp.sum(jnp.square(p[k] - old[k])) for k in old)

  def surrogate_fn(p):
    return direction * sum(jnp.sum(p[k]) for k in old)

  return old, step, surrogate_fn, kl_fn


def test_line_search_halves_a_step_that_breaks_the_kl_bound():
  old, step, surrogate_fn, kl_fn = quadratic_problem(direction=1.0)
  # Full step: KL 2 > 1 = max_kl. Half step: KL 0.5, improvement 2.
  result = trpo.line_search(surrogate_fn, kl_fn, old, step, jnp.float32(4.0), max_kl=1.0)
  assert bool(result.accepted)
  assert int(result.backtracks) == 1
  assert float(result.step_fraction) == 0.5
  assert float(result.kl) == 0.5 and float(result.kl) <= 1.0
  np.testing.assert_allclose(result.improvement, 2.0, rtol=1e-6)
  for name in old:
    np.testing.assert_allclose(result.params[name], old[name] + 0.5 * step[name], rtol=1e-6)


@pytest.mark.parametrize(
  "expected_improvement",
  [1.0, -4.0],  # a wrong model (every candidate evaluated), or no ascent direction at all
)
def test_line_search_returns_the_old_params_bitwise_when_nothing_improves(expected_improvement):
  old, step, surrogate_fn, kl_fn = quadratic_problem(direction=-1.0)
  result = jax.jit(
    lambda old, step: trpo.line_search(
      surrogate_fn,
      kl_fn,
      old,
      step,
      jnp.float32(expected_improvement),
      max_kl=1.0,
      max_backtracks=6,
    )
  )(old, step)
  assert not bool(result.accepted)
  assert int(result.backtracks) == 6
  assert float(result.step_fraction) == 0.0
  assert float(result.kl) == 0.0 and float(result.improvement) == 0.0
  for name in old:
    assert result.params[name].dtype == old[name].dtype
    np.testing.assert_array_equal(result.params[name], old[name])


@pytest.mark.parametrize("accept_ratio, accepted", [(0.05, True), (0.5, False)])
def test_line_search_accept_ratio_compares_actual_to_expected_gain(accept_ratio, accepted):
  old, step, surrogate_fn, kl_fn = quadratic_problem(direction=1.0)
  # The surrogate is linear, so every candidate gains exactly 1/10 of the claimed 40 * fraction.
  result = trpo.line_search(
    surrogate_fn, kl_fn, old, step, jnp.float32(40.0), max_kl=10.0, accept_ratio=accept_ratio
  )
  assert bool(result.accepted) == accepted
  assert int(result.backtracks) == (0 if accepted else 10)


# The whole step, compiled once for every test below (all problems share their shapes).

DAMPING = 0.1


@jax.jit
@chex.assert_max_traces(n=1)
def jitted_step(params, obs, actions, advantages):
  surrogate_fn, kl_fn = make_fns(params, obs, actions, advantages)
  return trpo.trpo_step(surrogate_fn, kl_fn, params, MAX_KL, 10, DAMPING, 10, 0.5)


def run_step(params, data):
  return jitted_step(params, data["obs"], data["actions"], data["advantages"])


def test_trpo_step_matches_a_numpy_natural_gradient_step():
  params, data = make_problem(2)
  result = run_step(params, data)

  assert bool(result.accepted)
  assert 0.0 < float(result.kl) <= MAX_KL
  np.testing.assert_allclose(
    result.kl, gaussian_kl_reference(params, result.params, data["obs"]), rtol=1e-3
  )
  assert float(result.improvement) > 0.0
  surrogate_fn, _ = make_fns(params, data["obs"], data["actions"], data["advantages"])
  surrogate_fn = jax.jit(surrogate_fn)
  np.testing.assert_allclose(
    result.improvement, surrogate_fn(result.params) - surrogate_fn(params), rtol=1e-4
  )

  full_step = natural_step_reference(params, data, DAMPING)
  # The quadratic model puts the full step on the bound; the cubic log-std term of the exact KL
  # pushes it just over (0.01004), so the line search halves it once.
  full_params = {name: params[name] + full_step[name] for name in params}
  assert gaussian_kl_reference(params, full_params, data["obs"]) > MAX_KL
  assert int(result.backtracks) == 1
  fraction = float(result.step_fraction)
  assert fraction == 0.5
  taken = {name: np.float64(result.params[name]) - params[name] for name in params}
  for name in params:
    np.testing.assert_allclose(taken[name], fraction * full_step[name], rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(result.step_size, np.linalg.norm(ravel_pytree(taken)[0]), rtol=1e-3)
  grad = surrogate_grad_reference(params, data["obs"], data["actions"], data["advantages"])
  np.testing.assert_allclose(result.grad_norm, np.linalg.norm(ravel_pytree(grad)[0]), rtol=1e-4)
  np.testing.assert_allclose(
    result.expected_improvement, ravel_pytree(grad)[0] @ ravel_pytree(taken)[0], rtol=1e-3
  )
  assert float(result.cg_residual) < 1e-3


def test_trpo_step_with_zero_advantages_rejects_and_keeps_the_params():
  params, data = make_problem(3, advantage_scale=0.0)
  result = run_step(params, data)
  assert not bool(result.accepted)
  assert float(result.step_size) == 0.0 and float(result.kl) == 0.0
  for name in params:
    np.testing.assert_array_equal(result.params[name], params[name])


def test_trpo_step_does_not_retrace_and_vmaps_over_problems():
  # jitted_step raises if it is traced a second time, here or in the tests above.
  problems = [make_problem(4), make_problem(5, advantage_scale=0.0)]
  results = [run_step(*problem) for problem in problems]
  assert bool(results[0].accepted) and not bool(results[1].accepted)
  chex.assert_trees_all_equal_shapes_and_dtypes(results[0], results[1])
  assert results[0].backtracks.dtype == jnp.int32

  # Batched, one problem rejects at once while the other is still searching.
  params, data = jax.tree.map(lambda *xs: np.stack(xs), *problems)
  batched = jax.vmap(jitted_step)(params, data["obs"], data["actions"], data["advantages"])
  for i, single in enumerate(results):
    chex.assert_trees_all_close(
      jax.tree.map(operator.itemgetter(i), batched), single, rtol=1e-5, atol=1e-6
    )

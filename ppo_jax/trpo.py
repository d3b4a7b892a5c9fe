"""TRPO (Schulman et al. 2015): conjugate gradient, Fisher products, line search, and the
policy step and value-only minibatch loss that `algorithm="trpo"` trains with.

Every function is pure and jittable; the solver (`conjugate_gradient`, `fisher_vector_product`,
`line_search`, `trpo_step`) is generic over parameter pytrees. The loops are
`lax.while_loop`s with static bounds, so a step runs inside a jitted (or vmapped) training
step with no host round-trip.

`kl_fn(params)` is the mean KL(old || new(params)) with the old policy held fixed, so it is 0
with zero gradient at the old parameters and its Hessian there is the Fisher matrix.
`surrogate_fn(params)` is mean(ratio * advantage), to be maximized.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from optax.tree_utils import tree_vdot

from ppo_jax import trust_region
from ppo_jax.gae import normalize_advantages
from ppo_jax.losses import LossMetrics, loss_terms
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import ActorCriticParams, Batch, Metrics, Params

if TYPE_CHECKING:
  from ppo_jax.networks import ActorCritic


class CGResult(NamedTuple):
  """x: solution shaped like b; residual_norm: [] |b - A x| as CG's recurrence tracks it;
  iterations_run: [] int32, the matrix-vector products spent."""

  x: Params
  residual_norm: jax.Array
  iterations_run: jax.Array


class LineSearchResult(NamedTuple):
  """Everything is measured at the returned params (the old ones when rejected).

  Attributes:
    params: the accepted candidate, or the old params unchanged.
    accepted: [] bool.
    backtracks: [] int32, shrinkings tried before acceptance; max_backtracks when rejected.
    step_fraction: [] backtrack_coef ** backtracks, or 0 when rejected.
    kl: [] kl_fn at the returned params (0 when rejected).
    improvement: [] surrogate gain of the returned params over the old (0 when rejected).
  """

  params: Params
  accepted: jax.Array
  backtracks: jax.Array
  step_fraction: jax.Array
  kl: jax.Array
  improvement: jax.Array


class TRPOStepResult(NamedTuple):
  """One TRPO policy step; scalars are [] and describe the returned params.

  Attributes:
    params: new policy params (bitwise the old ones when the step is rejected).
    accepted, backtracks, step_fraction, kl, improvement: as in LineSearchResult.
    step_size: L2 norm of the step taken (0 when rejected).
    expected_improvement: first-order prediction g . step of `improvement` (0 when rejected).
    cg_residual: residual norm of the CG solve of F s = g.
    grad_norm: L2 norm of the surrogate gradient g.
  """

  params: Params
  accepted: jax.Array
  backtracks: jax.Array
  step_fraction: jax.Array
  step_size: jax.Array
  kl: jax.Array
  improvement: jax.Array
  expected_improvement: jax.Array
  cg_residual: jax.Array
  grad_norm: jax.Array


def conjugate_gradient(
  matvec: Callable[[Params], Params], b: Params, iterations: int, residual_tol: float = 1e-10
) -> CGResult:
  """Solves A x = b for a symmetric positive-definite A, starting from x = 0.

  Args:
    matvec: v -> A v on pytrees shaped like `b`.
    b: right-hand side, any pytree of float arrays.
    iterations: static maximum number of iterations (matrix-vector products).
    residual_tol: stop early once the squared residual norm is <= this.
  Returns:
    CGResult; x has the structure and shapes of `b`.
  """
  b_flat, unravel = ravel_pytree(b)

  def cond(state):
    i, _, _, _, r_dot_r = state
    return (i < iterations) & (r_dot_r > residual_tol)

  def body(state):
    i, x, r, p, r_dot_r = state
    a_p = ravel_pytree(matvec(unravel(p)))[0]
    alpha = r_dot_r / jnp.vdot(p, a_p)
    x = x + alpha * p
    r = r - alpha * a_p
    new_r_dot_r = jnp.vdot(r, r)
    p = r + (new_r_dot_r / r_dot_r) * p
    return i + 1, x, r, p, new_r_dot_r

  init = (jnp.int32(0), jnp.zeros_like(b_flat), b_flat, b_flat, jnp.vdot(b_flat, b_flat))
  i, x, _, _, r_dot_r = jax.lax.while_loop(cond, body, init)
  return CGResult(x=unravel(x), residual_norm=jnp.sqrt(r_dot_r), iterations_run=i)


def fisher_vector_product(
  kl_fn: Callable[[Params], jax.Array], params: Params, damping: float
) -> Callable[[Params], Params]:
  """Returns v -> (H + damping I) v, H the Hessian of `kl_fn` at `params` (the Fisher matrix).

  Forward-over-reverse: a jvp of grad(kl_fn). `jax.linearize` runs the primal pass once here,
  so each product inside CG costs only the tangent pass. Damping keeps F s = g well posed when
  the sampled Fisher is (near) singular.
  """
  _, hessian_vector_product = jax.linearize(jax.grad(kl_fn), params)

  def fvp(v: Params) -> Params:
    return jax.tree.map(lambda hv, x: hv + damping * x, hessian_vector_product(v), v)

  return fvp


def line_search(
  surrogate_fn: Callable[[Params], jax.Array] | None,
  kl_fn: Callable[[Params], jax.Array],
  params: Params,
  full_step: Params,
  expected_improvement: jax.Array,
  max_kl: float,
  max_backtracks: int = 10,
  backtrack_coef: float = 0.5,
  accept_ratio: float = 0.0,
) -> LineSearchResult:
  """Backtracks params + backtrack_coef**k * full_step, k = 0 .. max_backtracks - 1.

  Accepts the first candidate with kl_fn <= max_kl, a positive surrogate improvement, and an
  improvement >= accept_ratio * expected_improvement * step fraction. Schulman's original uses
  accept_ratio = 0.1; the default 0 asks only for a real gain. A step that is not an ascent
  direction (expected_improvement <= 0 or non-finite) is rejected without evaluation. Without
  a surrogate (None) the KL bound alone decides, and `expected_improvement` is unused.

  Args:
    full_step: pytree shaped like `params`, the step at fraction 1.
    expected_improvement: [] first-order gain g . full_step of the full step.
    max_backtracks: static number of candidates tried.
  Returns:
    LineSearchResult; when rejected, `params` are returned unchanged.
  """
  kl_zero = jnp.zeros((), jax.eval_shape(kl_fn, params).dtype)
  kl_only = surrogate_fn is None
  if kl_only:
    surrogate_fn, is_ascent = (lambda _: kl_zero), jnp.bool_(True)
  else:
    is_ascent = jnp.isfinite(expected_improvement) & (expected_improvement > 0)
  surrogate_old = surrogate_fn(params)

  def cond(state):
    k, accepted, _, _, _ = state
    return is_ascent & ~accepted & (k < max_backtracks)

  def body(state):
    k, _, _, _, _ = state
    fraction = backtrack_coef**k
    candidate = jax.tree.map(lambda p, s: (p + fraction * s).astype(p.dtype), params, full_step)
    kl = kl_fn(candidate)
    improvement = surrogate_fn(candidate) - surrogate_old
    accepted = kl <= max_kl
    if not kl_only:
      accepted &= (improvement > 0) & (
        improvement >= accept_ratio * expected_improvement * fraction
      )
    # k stays at the accepted candidate, so it counts the shrinkings before acceptance.
    return jnp.where(accepted, k, k + 1), accepted, candidate, kl, improvement

  init = (jnp.int32(0), jnp.bool_(False), params, kl_zero, jnp.zeros_like(surrogate_old))
  k, accepted, candidate, kl, improvement = jax.lax.while_loop(cond, body, init)
  return LineSearchResult(
    params=optax.tree.where(accepted, candidate, params),
    accepted=accepted,
    backtracks=jnp.where(accepted, k, jnp.int32(max_backtracks)),
    step_fraction=jnp.where(accepted, backtrack_coef**k, 0.0),
    kl=jnp.where(accepted, kl, 0.0),
    improvement=jnp.where(accepted, improvement, 0.0),
  )


def trpo_step(
  surrogate_fn: Callable[[Params], jax.Array],
  kl_fn: Callable[[Params], jax.Array],
  params: Params,
  max_kl: float,
  cg_iterations: int = 10,
  cg_damping: float = 0.1,
  max_backtracks: int = 10,
  backtrack_coef: float = 0.5,
  accept_ratio: float = 0.0,
  bound_fn: Callable[[Params], jax.Array] | None = None,
) -> TRPOStepResult:
  """One natural-gradient step on the surrogate, scaled to the KL bound, then a line search.

  Solves F s = g by CG, scales s so that the quadratic model of the KL, 0.5 step^T F step,
  equals max_kl, and backtracks from there until `bound_fn` is within max_kl.

  Args:
    surrogate_fn: params -> [] mean(ratio * advantage), to be maximized.
    kl_fn: params -> [] mean KL(old || new), old fixed at `params` (its Hessian is F).
    bound_fn: params -> [] the KL the line search bounds; `kl_fn` when None.
    params: current (old) policy params, any pytree of float arrays.
    max_kl: trust-region radius delta.
    cg_iterations, max_backtracks: static loop bounds.
  Returns:
    TRPOStepResult; rejected steps return `params` unchanged.
  """
  grad = jax.grad(surrogate_fn)(params)
  fvp = fisher_vector_product(kl_fn, params, cg_damping)
  cg = conjugate_gradient(fvp, grad, cg_iterations)
  s_dot_fs = tree_vdot(cg.x, fvp(cg.x))
  # A zero gradient or a broken solve leaves no direction to scale: a zero step, which the
  # line search rejects as no ascent.
  valid = jnp.isfinite(s_dot_fs) & (s_dot_fs > 0)
  scale = jnp.sqrt(2.0 * max_kl / jnp.where(valid, s_dot_fs, 1.0))
  full_step = jax.tree.map(lambda s: jnp.where(valid, scale * s, 0.0).astype(s.dtype), cg.x)
  expected = tree_vdot(grad, full_step)
  search = line_search(
    surrogate_fn,
    kl_fn if bound_fn is None else bound_fn,
    params,
    full_step,
    expected,
    max_kl,
    max_backtracks,
    backtrack_coef,
    accept_ratio=accept_ratio,
  )
  return TRPOStepResult(
    **search._asdict(),
    step_size=search.step_fraction * jnp.sqrt(tree_vdot(full_step, full_step)),
    expected_improvement=search.step_fraction * expected,
    cg_residual=cg.residual_norm,
    grad_norm=jnp.sqrt(tree_vdot(grad, grad)),
  )


# The TRPOStepResult fields reported as "trpo/<name>" metrics.
STEP_METRICS = (
  "accepted",
  "backtracks",
  "step_fraction",
  "step_size",
  "kl",
  "improvement",
  "expected_improvement",
  "cg_residual",
  "grad_norm",
)


def policy_step(
  params: ActorCriticParams,
  normalizer: RunningStatistics,
  batch: Batch,
  *,
  networks: ActorCritic,
  normalize_advantage: bool,
  max_kl: float,
  cg_iterations: int,
  cg_damping: float,
  max_backtracks: int,
  backtrack_coef: float,
) -> tuple[ActorCriticParams, Metrics]:
  """One TRPO step of the policy on the whole batch [N, ...]: (params, "trpo/..." metrics).

  `params.policy` is the behaviour policy re-expressed under this iteration's statistics
  `normalizer` (`trust_region.reexpress`). The Fisher matrix is the Hessian of the KL from
  those params; the line search bounds the whole change from the behaviour policy,
  `trust_region.update_kl`, by max_kl ("trpo/kl" is it, at an accepted step).
  """
  advantages = normalize_advantages(batch.advantage) if normalize_advantage else batch.advantage
  old = jax.lax.stop_gradient(networks.policy(params.policy, normalizer, batch.obs))

  def surrogate(policy_params):
    distribution = networks.policy(policy_params, normalizer, batch.obs)
    ratio = jnp.exp(distribution.log_prob(batch.action) - batch.log_prob)
    return jnp.mean(ratio * advantages)

  def kl(policy_params):
    return jnp.mean(old.kl(networks.policy(policy_params, normalizer, batch.obs)))

  def whole_change(policy_params):
    return trust_region.update_kl(networks, policy_params, normalizer, batch)

  step = trpo_step(
    surrogate,
    kl,
    params.policy,
    max_kl=max_kl,
    cg_iterations=cg_iterations,
    cg_damping=cg_damping,
    max_backtracks=max_backtracks,
    backtrack_coef=backtrack_coef,
    bound_fn=whole_change,
  )
  metrics = {f"trpo/{name}": getattr(step, name) for name in STEP_METRICS}
  return params.replace(policy=step.params), metrics


def value_fit_loss(
  params: ActorCriticParams,
  normalizer: RunningStatistics,
  batch: Batch,
  key: jax.Array,
  *,
  vf_loss_coefficient: float,
  **term_kwargs,
) -> tuple[jax.Array, LossMetrics]:
  """TRPO's minibatch objective: vf_loss_coefficient * the value loss alone, since the policy
  moves by `policy_step`; the metrics are PPO's (see `losses.loss_terms`)."""
  terms, metrics = loss_terms(params, normalizer, batch, key, **term_kwargs)
  total = vf_loss_coefficient * terms.value
  return total, jax.lax.stop_gradient(metrics._replace(total_loss=total))

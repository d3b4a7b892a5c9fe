"""Dict observations and the asymmetric actor-critic: Brax's obs-key rule, per-entry statistics,
and the whole pipeline (rollout, GAE, update, checkpoint, load_policy, evaluation)."""

from __future__ import annotations

import functools
import inspect
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import fresh, run_steps, tiny

import envs
from experiments import evaluate
from ppo_jax import checkpoint, load_policy, normalization, rollout, train
from ppo_jax.batch import make_batch
from ppo_jax.networks import make_actor_critic, make_policy

ASYMMETRIC = dict(env="builtin/cartpole_privileged", value_obs_key="privileged_state")
SIZES = {"state": 3, "privileged_state": 5}


def first_kernel(params) -> jax.Array:
  """The first dense kernel of a flax MLP's params, [input size, width]."""
  return params["params"]["MLP_0"]["Dense_0"]["kernel"]


# Brax's rule for policy_obs_key / value_obs_key.


def test_obs_key_defaults_are_braxs():
  from brax.training.agents.ppo import networks as brax_networks

  brax_defaults = inspect.signature(brax_networks.make_ppo_networks).parameters
  cfg = tiny()
  for name in ("policy_obs_key", "value_obs_key"):
    assert getattr(cfg, name) == brax_defaults[name].default == "state"


@pytest.mark.parametrize(
  ("observation_size", "policy_key", "value_key"),
  [(SIZES, "state", "privileged_state"), (SIZES, "privileged_state", "state"), (7, "x", "y")],
)
def test_each_network_sees_the_entry_brax_gives_it(observation_size, policy_key, value_key):
  from brax.training.acme import running_statistics
  from brax.training.agents.ppo import networks as brax_networks

  brax = brax_networks.make_ppo_networks(
    observation_size,
    2,
    preprocess_observations_fn=running_statistics.normalize,
    policy_obs_key=policy_key,
    value_obs_key=value_key,
  )
  key = jax.random.PRNGKey(0)
  brax_policy = brax.policy_network.init(key)["params"]["hidden_0"]["kernel"].shape
  brax_value = brax.value_network.init(key)["params"]["hidden_0"]["kernel"].shape
  cfg = tiny(policy_obs_key=policy_key, value_obs_key=value_key)
  params = make_actor_critic(cfg, observation_size, 2).init(key)
  assert first_kernel(params.policy).shape[0] == brax_policy[0]
  assert first_kernel(params.value).shape[0] == brax_value[0]

  # Each network's output depends on its own entry only, as in Brax.
  networks = make_actor_critic(cfg, observation_size, 2)
  stats = normalization.init(observation_size)
  obs = jax.tree.map(lambda n: jnp.ones((4, n)), observation_size)
  for entry, net, key_of_net in (
    ("policy", lambda o: networks.policy(params.policy, stats, o).mean, policy_key),
    ("value", lambda o: networks.value(params.value, stats, o), value_key),
  ):
    if not isinstance(obs, dict):
      continue
    other = next(k for k in obs if k != key_of_net)
    changed = {**obs, other: obs[other] * 5.0}
    np.testing.assert_array_equal(net(obs), net(changed), err_msg=entry)
    own = {**obs, key_of_net: obs[key_of_net] * 5.0}
    assert not np.allclose(net(obs), net(own)), entry


def test_an_obs_key_the_env_lacks_is_a_value_error_naming_the_field():
  with pytest.raises(ValueError, match=r"value_obs_key \('critic'\) must name an entry.*state"):
    fresh(tiny(env="builtin/cartpole_privileged", value_obs_key="critic"))


def test_a_non_flat_observation_is_refused():
  bad = envs.base._check_obs({"state": jnp.zeros(3)}, "ok")
  assert set(bad) == {"state"}
  with pytest.raises(ValueError, match="flat observation vector or a dict of them"):
    envs.base._check_obs({"pixels": jnp.zeros((8, 8, 3))}, "builtin/x")


# Statistics per entry.


def test_statistics_per_entry_match_numpy():
  rng = np.random.default_rng(0)
  batches = [
    {name: rng.normal(loc=3.0, size=(5, 7, n)).astype(np.float32) for name, n in SIZES.items()}
    for _ in range(3)
  ]
  stats = normalization.init(SIZES)
  for batch in batches:
    stats = normalization.update(stats, batch)
  assert float(stats.count) == 3 * 5 * 7
  for name, n in SIZES.items():
    data = np.concatenate([b[name].reshape(-1, n) for b in batches]).astype(np.float64)
    np.testing.assert_allclose(stats.mean[name], data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std[name], data.std(0), rtol=1e-4)
    one = normalization.select(stats, name)
    normalized = normalization.normalize(one, batches[0][name])
    np.testing.assert_allclose(
      normalized, np.clip((batches[0][name] - data.mean(0)) / data.std(0), -10, 10), atol=1e-4
    )


# The pipeline.


def test_rollout_gae_and_update_with_dict_observations():
  cfg = tiny(**ASYMMETRIC)
  states, metrics = run_steps(cfg, 2)
  last = states[-1]
  assert set(last.normalizer.mean) == {"state", "privileged_state"}
  assert np.all(np.isfinite(metrics["total_loss"])) and np.all(metrics["grad_norm"] > 0)
  assert not np.array_equal(first_kernel(states[0].params.value), first_kernel(last.params.value))

  # GAE on dict observations: the values come from the privileged entry alone.
  env, networks, state = fresh(cfg)

  collect = jax.jit(functools.partial(rollout.collect, env, networks), static_argnums=(4, 5))
  _, transitions, _ = collect(
    state.params.policy, state.normalizer, state.env_state, state.key, 1, 8
  )
  assert transitions.obs["state"].shape == (8, cfg.num_envs, 4)
  batches = jax.jit(functools.partial(make_batch, cfg, networks, state.params.value))
  batch = batches(state.normalizer, transitions)
  noisy = {**transitions.obs, "state": transitions.obs["state"] + 1.0}
  noisy_next = {**transitions.next_obs, "state": transitions.next_obs["state"] + 1.0}
  other = batches(state.normalizer, transitions._replace(obs=noisy, next_obs=noisy_next))
  np.testing.assert_array_equal(batch.target, other.target)
  assert batch.obs["privileged_state"].shape == (8 * cfg.num_envs, 4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """An asymmetric builtin/cartpole_privileged policy saved as `train` saves it, untrained,
  with observation statistics of a few steps of every entry."""
  cfg = tiny(**ASYMMETRIC)
  env, _, state = fresh(cfg)
  step = jax.jit(jax.vmap(env.step))
  env_state, observations = state.env_state, []
  for _ in range(5):
    env_state = step(env_state, jnp.ones((cfg.num_envs, 1)))
    observations.append(env_state.obs)
  stats = normalization.update(
    state.normalizer, jax.tree.map(lambda *x: jnp.stack(x), *observations)
  )
  path = tmp_path_factory.mktemp("dict_obs") / "run"
  checkpoint.save_policy(
    path, cfg, env.observation_size, env.action_size, state.params.policy, stats
  )
  return path


def test_checkpoint_round_trip_with_dict_observations(tmp_path):
  cfg = tiny(**ASYMMETRIC)
  _, _, state = fresh(cfg)
  checkpoints = checkpoint.Checkpointer(tmp_path, keep=1)
  checkpoints.save(1, state, {"step": 1})
  restored, _ = checkpoints.restore_latest(jax.tree.map(jnp.zeros_like, state))
  chex.assert_trees_all_equal(restored, state)
  assert set(restored.env_state.obs) == {"state", "privileged_state"}
  assert set(restored.normalizer.mean) == {"state", "privileged_state"}


def test_load_policy_takes_what_the_policy_sees(run_dir):
  cfg = tiny(**ASYMMETRIC)
  spec = json.loads((run_dir / checkpoint.POLICY / "policy.json").read_text())
  assert spec["observation_size"] == 4
  _, _, params, normalizer = checkpoint.load_policy_payload(run_dir)[1:]
  assert np.shape(normalizer.mean) == (4,)

  policy = jax.jit(load_policy(run_dir))
  env, networks, _ = fresh(cfg)
  obs = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(3), 5)).obs
  # The whole-observation policy of the same params: with the full statistics per entry.
  stats = normalization.init(env.observation_size)
  stats = stats.replace(
    count=normalizer.count,
    mean={"state": normalizer.mean, "privileged_state": jnp.zeros(4)},
    m2={"state": normalizer.m2, "privileged_state": jnp.zeros(4)},
  )
  full = make_policy(networks, params, stats)
  np.testing.assert_allclose(policy(obs["state"]), full(obs), rtol=1e-6)


def test_evaluation_with_dict_observations(run_dir, capsys):
  out = evaluate.main([str(run_dir), "--episodes", "2", "--no-video"])
  with np.load(out / evaluate.TRACE_FILE) as npz:
    assert npz["observations/state"].shape[1:] == (2, 4)
    assert npz["observations/privileged_state"].shape == npz["observations/state"].shape
    rewards = npz["rewards"]
  results = json.loads((out / evaluate.RETURNS_FILE).read_text())
  assert len(results["returns"]) == 2 and results["mean_return"] == pytest.approx(
    float(np.sum(rewards * np.load(out / evaluate.TRACE_FILE)["alive"]) / 2), rel=1e-5
  )


@pytest.mark.slow  # ~10 s: jax2onnx and onnxruntime
def test_onnx_export_takes_the_policys_entry(run_dir, tmp_path):
  from experiments import export

  model = export.export_policy(run_dir, tmp_path / "policy.onnx")
  assert export.largest_difference(run_dir, model, count=200) < 1e-5


@pytest.mark.slow  # ~1 minute on a CPU core
def test_the_asymmetric_cartpole_trains_to_its_threshold():
  from experiments.presets import PRESETS

  cfg = PRESETS["cartpole_privileged"]
  assert cfg.value_obs_key == "privileged_state" and cfg.policy_obs_key == "state"
  result = train(cfg, progress_fn=None, show_progress=False)
  solved = envs.make(cfg.env).solved_threshold
  assert result.evals["eval/episode_return"][-1] >= solved

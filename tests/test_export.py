"""experiments.export: the ONNX model and `load_policy(run_dir, deterministic=True)` agree
within 1e-5 on 1,000 random observations (onnxruntime on the CPU), for the default
experiment's policy and for a trained built-in task; the batch size is dynamic."""

from __future__ import annotations

import jax
import numpy as np
import onnx
import onnxruntime
import pytest
from tiny import tiny

from experiments import export
from experiments.presets import PRESETS
from ppo_jax import checkpoint, load_policy, train
from ppo_jax.networks import make_actor_critic
from ppo_jax.normalization import RunningStatistics

# brax/inverted_pendulum's observation and action sizes (test_default_env_sizes checks them):
# building the Brax env takes longer than the whole export.
INVERTED_PENDULUM = (4, 1)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
  """The default experiment's policy in the layout `train` writes, untrained (export does not
  depend on training), with observation statistics and weights large enough that the
  normalizer's clip and the action bounds are reached."""
  cfg = PRESETS["default"]
  observation_size, action_size = INVERTED_PENDULUM
  networks = make_actor_critic(cfg, observation_size, action_size)
  params = jax.tree.map(lambda p: 3.0 * p, networks.init(jax.random.PRNGKey(0)).policy)
  rng = np.random.default_rng(1)
  normalizer = RunningStatistics(
    count=np.float32(1000.0),
    mean=rng.normal(size=observation_size).astype(np.float32),
    m2=(1000.0 * rng.uniform(0.1, 4.0, observation_size)).astype(np.float32),
  )
  run_dir = tmp_path_factory.mktemp("export") / "default"
  checkpoint.save_policy(run_dir, cfg, observation_size, action_size, params, normalizer)
  return run_dir


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
  """A tiny trained builtin/cartpole_balance run."""
  run_dir = tmp_path_factory.mktemp("export") / "builtin"
  train(tiny(), run_dir, show_progress=False)
  return run_dir


def onnx_and_jax_actions(run_dir, model):
  """(ONNX actions, JAX actions, observations) on 1,000 random observations."""
  normalizer = checkpoint.load_policy_payload(run_dir)[4]
  observations = export.random_observations(normalizer, 1000, seed=7)
  session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
  (actions,) = session.run(["action"], {"observation": observations})
  expected = np.asarray(jax.jit(load_policy(run_dir, deterministic=True))(observations))
  return actions, expected, observations


def test_default_experiment_policy(default_run, tmp_path):
  model = export.export_policy(default_run, tmp_path / "policy.onnx")
  actions, expected, observations = onnx_and_jax_actions(default_run, model)
  assert actions.shape == expected.shape == (1000, 1) and actions.dtype == np.float32
  np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)
  # What was compared reaches the folded-in normalizer's clip (at 10 std) and action bounds.
  normalizer = checkpoint.load_policy_payload(default_run)[4]
  z = (observations - normalizer.mean) / np.asarray(normalizer.std)
  assert np.any(np.abs(z) > 10.0)
  saturated = np.mean(np.abs(expected) == 1.0)
  assert 0.05 < saturated < 0.95, saturated

  # Any batch size, one observation included.
  session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
  for batch in (1, 7):
    (some,) = session.run(["action"], {"observation": observations[:batch]})
    np.testing.assert_allclose(some, expected[:batch], rtol=0, atol=1e-5)
  proto = onnx.load(model)
  onnx.checker.check_model(proto)
  assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [export.OPSET]
  metadata = {p.key: p.value for p in proto.metadata_props}
  assert metadata == {
    "env": "brax/inverted_pendulum",
    "observation_size": "4",
    "action_size": "1",
    "policy_obs_key": "state",
  }


def test_trained_builtin_task_through_the_cli(builtin_run, capsys):
  path = export.main([str(builtin_run)])
  assert path == builtin_run / export.ONNX_FILE
  actions, expected, _ = onnx_and_jax_actions(builtin_run, path)
  assert actions.shape == (1000, 1)
  np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)
  out = capsys.readouterr().out
  assert out.startswith(f"wrote {path}") and "on 1000 random observations" in out
  difference = float(out.split("differ by at most ")[1].split()[0])
  assert difference == pytest.approx(np.max(np.abs(actions - expected)), abs=1e-6)


def test_a_run_dir_without_a_policy_is_a_clear_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    export.main([str(tmp_path)])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert "has no saved policy" in err and "Traceback" not in err
  assert not (tmp_path / export.ONNX_FILE).exists()


@pytest.mark.slow  # Brax's import and env construction: ~20 s
def test_default_env_sizes():
  from ppo_jax.step import make_env

  env = make_env(PRESETS["default"])
  assert (env.observation_size, env.action_size) == INVERTED_PENDULUM

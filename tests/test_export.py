"""experiments.export: the ONNX model and `load_policy(run_dir, deterministic=True)` agree on
1,000 random observations (onnxruntime on the CPU), for the default experiment's policy and for
a trained built-in task; the batch size is dynamic.

Both are float32 programs that sum in orders of their own choosing (onnxruntime's kernels,
XLA's by the CPU's vector instructions), so neither is compared with a fixed tolerance: each is
compared with the same policy evaluated in float64 (`reference_actions`), within a forward
error bound of float32 evaluation computed per observation (`float32_error_bound`). A wrong
export - another normalizer, a missing clip, a layer left out - is off by far more.
"""

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
from ppo_jax.networks import make_actor_critic, make_policy
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


UNIT_ROUNDING = 2.0**-24  # float32


def _swish_derivative(x):
  sigmoid = 1 / (1 + np.exp(-x))
  return sigmoid * (1 + x * (1 - sigmoid))


def reference_actions(run_dir, observations):
  """(float64 actions, a bound on any float32 evaluation's error), each [count, action_size].

  The policy of `ppo_jax.networks` with a "normal" distribution and swish layers: normalize
  (clip at 10 std), the hidden layers, the mean layer, clipped to [-1, 1] (1-Lipschitz).

  The bound is first order in the unit rounding u and holds for any summation order: each
  dot product of n terms is off by at most gamma_n * sum |w_i x_i|, gamma_n = n u / (1 - n u)
  (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); each swish output by 16 u of
  its size (exp and the logistic function are within a few ulps in XLA and onnxruntime); each
  standardized input by 4 u of |x| + |mean| over std (a subtraction, then a division or a
  multiplication by a folded reciprocal). Every local error reaches the action through the
  exact derivative of the rest of the network at that observation (taken in absolute value,
  so errors of any sign add up).
  """
  cfg, _, _, params, normalizer = checkpoint.load_policy_payload(run_dir)
  assert (cfg.activation, cfg.distribution_type) == ("swish", "normal")
  u = UNIT_ROUNDING
  layers = params["params"]["MLP_0"]
  layers = [layers[f"Dense_{i}"] for i in range(len(layers))] + [params["params"]["Dense_0"]]
  kernels = [np.float64(layer["kernel"]) for layer in layers]
  biases = [np.float64(layer["bias"]) for layer in layers]
  mean, std = np.float64(normalizer.mean), np.float64(normalizer.std)
  x = np.float64(observations)
  z = (x - mean) / std
  inputs, pre = [np.clip(z, -10.0, 10.0)], []
  for kernel, bias in zip(kernels, biases, strict=True):
    pre.append(inputs[-1] @ kernel + bias)
    inputs.append(pre[-1] / (1 + np.exp(-pre[-1])))
  action = np.clip(pre[-1], -1.0, 1.0)

  def dot_error(i):  # [count, width of layer i's output]
    n = kernels[i].shape[0]
    return n * u / (1 - n * u) * (np.abs(inputs[i]) @ np.abs(kernels[i]) + np.abs(biases[i]))

  # d action / d pre-activation of the mean layer is the identity, [count, action, action].
  gradient = np.broadcast_to(np.eye(action.shape[1]), (*action.shape, action.shape[1]))
  bound = np.einsum("caw,cw->ca", np.abs(gradient), dot_error(len(kernels) - 1))
  for i in reversed(range(len(kernels) - 1)):
    gradient_h = gradient @ kernels[i + 1].T  # d action / d output of hidden layer i
    bound += np.einsum("caw,cw->ca", np.abs(gradient_h), 16 * u * np.abs(inputs[i + 1]))
    gradient = gradient_h * _swish_derivative(pre[i])[:, None, :]
    bound += np.einsum("caw,cw->ca", np.abs(gradient), dot_error(i))
  gradient_z = (gradient @ kernels[0].T) * (np.abs(z) < 10.0)[:, None, :]
  z_error = 4 * u * (np.abs(x) + np.abs(mean)) / std
  bound += np.einsum("caw,cw->ca", np.abs(gradient_z), z_error)
  return action, bound


def assert_float32_close(actions, observations, run_dir):
  """Both the ONNX and the JAX actions are within the float32 error bound of the float64 policy."""
  reference, bound = reference_actions(run_dir, observations)
  excess = np.abs(np.float64(actions) - reference) - bound
  assert np.all(excess <= 0), (np.max(excess), np.max(bound))


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
  assert_float32_close(actions, observations, default_run)
  assert_float32_close(expected, observations, default_run)
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
    assert_float32_close(some, observations[:batch], default_run)
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


def test_the_error_bound_fails_a_half_precision_policy(default_run):
  """The bound is not so loose that a real change passes: the policy with its weights rounded
  to float16 (an export that quantized) is beyond it on some of the 1,000 observations."""
  cfg, observation_size, action_size, params, normalizer = checkpoint.load_policy_payload(
    default_run
  )
  observations = export.random_observations(normalizer, 1000, seed=7)
  half = jax.tree.map(lambda p: np.asarray(p).astype(np.float16).astype(np.float32), params)
  networks = make_actor_critic(cfg, observation_size, action_size)
  actions = np.asarray(jax.jit(make_policy(networks, half, normalizer, True))(observations))
  reference, bound = reference_actions(default_run, observations)
  assert np.mean(np.abs(actions - reference) > bound) > 0.01


def test_trained_builtin_task_through_the_cli(builtin_run, capsys):
  path = export.main([str(builtin_run)])
  assert path == builtin_run / export.ONNX_FILE
  actions, expected, observations = onnx_and_jax_actions(builtin_run, path)
  assert actions.shape == (1000, 1)
  assert_float32_close(actions, observations, builtin_run)
  assert_float32_close(expected, observations, builtin_run)
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

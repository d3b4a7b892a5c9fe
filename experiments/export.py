"""Export a run's deterministic policy as an ONNX model: raw observations in, env actions out.

python -m experiments.export RUN_DIR [--output PATH] [--opset 17]

RUN_DIR may also be a policy folder's parent such as RUN_DIR/largest_kl/before. The model is
the very function `ppo_jax.load_policy(RUN_DIR, deterministic=True)` returns, traced by
jax2onnx: the observation normalizer (the run's final statistics), the policy network, the
distribution's deterministic action and its mapping to the env's action range are all in the
graph, so a runtime needs nothing else. Input "observation" [batch, observation_size] float32,
output "action" [batch, action_size] float32, with a dynamic batch size. The model's metadata
holds the env's name, both sizes and `policy_obs_key`: of an env with dict observations, the
model takes that entry. After writing, the model is run with onnxruntime on
random observations and compared with the JAX policy; the largest difference is printed.

Needs the `export` extra: pip install -e ".[export]" (jax2onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from ppo_jax import checkpoint, load_policy
from ppo_jax.normalization import RunningStatistics

ONNX_FILE = "policy.onnx"
INPUT, OUTPUT = "observation", "action"
# Opset 17 runs on onnxruntime 1.11 and later, and on most embedded runtimes; the policy needs
# no newer operator.
OPSET = 17


def export_policy(run_dir: str | Path, output: str | Path, opset: int = OPSET) -> Path:
  """Writes the deterministic policy of the run in `run_dir` to the ONNX file `output`.

  Returns:
    The output path.
  Raises:
    FileNotFoundError: if `run_dir` has no saved policy.
  """
  import jax2onnx
  import onnx

  cfg, observation_size, action_size, _, _ = checkpoint.load_policy_payload(run_dir)
  policy = load_policy(run_dir, deterministic=True)
  model = jax2onnx.to_onnx(
    lambda observation: policy(observation),
    [("batch", observation_size)],
    model_name="policy",
    opset=opset,
    input_names=[INPUT],
    output_names=[OUTPUT],
  )
  metadata = {
    "env": cfg.env,
    "observation_size": observation_size,
    "action_size": action_size,
    "policy_obs_key": cfg.policy_obs_key,
  }
  onnx.helper.set_model_props(model, {key: str(value) for key, value in metadata.items()})
  output = Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  onnx.save_model(model, output)
  return output


def random_observations(normalizer: RunningStatistics, count: int, seed: int = 0) -> np.ndarray:
  """[count, observation_size] float32 observations spread four times as wide as the run's
  observation statistics (unit ones where it has none), so that the normalizer's clip is
  reached, and the action bounds with it."""
  rng = np.random.default_rng(seed)
  seen = float(normalizer.count) > 0
  mean = np.asarray(normalizer.mean) if seen else np.zeros_like(normalizer.mean)
  std = np.asarray(normalizer.std) if seen else np.ones_like(normalizer.mean)
  return (mean + 4.0 * std * rng.standard_normal((count, mean.size))).astype(np.float32)


def largest_difference(run_dir: str | Path, model: str | Path, count: int = 1000) -> float:
  """max |ONNX action - JAX action| over `count` random observations (onnxruntime, CPU)."""
  import onnxruntime

  normalizer = checkpoint.load_policy_payload(run_dir)[4]
  observations = random_observations(normalizer, count)
  session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
  (onnx_actions,) = session.run([OUTPUT], {INPUT: observations})
  jax_actions = jax.jit(load_policy(run_dir, deterministic=True))(observations)
  return float(np.max(np.abs(onnx_actions - np.asarray(jax_actions))))


def main(argv: list[str] | None = None) -> Path:
  """CLI entry point; returns the path written."""
  parser = argparse.ArgumentParser(
    prog="python -m experiments.export",
    description="Export a run's deterministic policy (normalizer and action bounds included) "
    "to ONNX.",
  )
  parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory")
  parser.add_argument("--output", "-o", type=Path, help=f"ONNX file (default: RUN_DIR/{ONNX_FILE})")
  parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
  args = parser.parse_args(argv)
  try:
    import jax2onnx  # noqa: F401
    import onnxruntime  # noqa: F401
  except ImportError as error:
    parser.error(f"{error.name} is not installed: pip install -e '.[export]'")
  try:
    checkpoint.load_policy_payload(args.run_dir)
  except FileNotFoundError as error:
    parser.error(str(error))
  output = export_policy(args.run_dir, args.output or args.run_dir / ONNX_FILE, args.opset)
  difference = largest_difference(args.run_dir, output)
  print(
    f"wrote {output} ({output.stat().st_size:,d} bytes); onnxruntime and JAX actions differ by "
    f"at most {difference:.2g} on 1000 random observations"
  )
  return output


if __name__ == "__main__":
  main()

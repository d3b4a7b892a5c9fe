"""Golden runs: a config and a seed give the same numbers today as when the file was recorded.

`tests/golden/*.npz` holds, for two tiny configs (PPO with both KL brakes, value clipping and
gradient clipping; TRPO with a state-independent std), what `train` returned: every leaf of
the final TrainState, every per-iteration metric and evaluation (timings aside) and the health
report. `python tests/test_golden.py` records the files again, for a change that is meant to
alter the numbers.

Where the file was recorded (same JAX version, CPU instruction set and XLA CPU flags, see
`platform()`), a refactor must reproduce it bit for bit. Elsewhere XLA picks other kernels
(AVX-512 against AVX2 against SSE4.2), float32 sums are rounded in another order and a correct
implementation gives other bits. What then stays comparable, and how closely, is argued per
quantity below (`compare`); `test_off_platform_rules_catch_a_real_change` shows the rules
still fail a run that really changed.

Measured on one AVX-512 machine, with the files recorded there, under `--xla_cpu_max_isa` =
AVX2, AVX and SSE4_2 (the largest difference of any metric, as a fraction of the largest value
that metric takes in the run):
- ppo_brakes: at most 1.5e-5 in any iteration; 6.8e-5 in a leaf of the final state (Adam's
  second moments, which square the gradients' rounding). PPO's clipped epochs do not amplify
  rounding: the run stays at float32's level throughout.
- trpo: at most 3.2e-5 in any iteration, 5.2e-5 in the final state. It can be chaotic, though:
  before its line search bounded the whole change (and with GAE once per iteration), files
  recorded on an AVX2 machine and compared on this one differed by 5e-6 in the first iteration,
  1e-4 to 8e-4 in the 2nd to 4th, then about 10x more an iteration (2e-2 and 0.45 in the 8th),
  one env's termination moving a step from the 7th iteration on. The natural-gradient step
  solves F x = g by conjugate gradients; the rounding of the Fisher-vector products (float32
  sums over the batch) enters x multiplied by F's condition number, and the next rollout then
  starts from other parameters. The rules below allow for that.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import tiny

from ppo_jax import train
from ppo_jax.logger import is_timing

GOLDEN = Path(__file__).parent / "golden"


@dataclasses.dataclass(frozen=True)
class Golden:
  """A recorded config and how closely another platform must reproduce it.

  Attributes:
    config: the run.
    tight: per iteration from the first, the largest difference of any metric allowed off the
      recording platform, as a fraction of that metric's largest magnitude in the run; later
      iterations are compared only by the run's statistics (LOOSE).
  """

  config: object
  tight: tuple[float, ...]


# Float32 rounding of one iteration's sums (a few thousand terms per reduction, reordered by the
# ISA) stays near 1e-5 of a metric's scale: measured 3.2e-5 at worst; 1e-4 is 3x that, and
# 2,000x below what a 50% larger TRPO step bound does to the first iteration (the test below).
ROUNDING = 1e-4
# The final state, where the whole run is comparable: 64 minibatch steps and 1,024 steps of each
# env's physics accumulate the rounding, and Adam's second moments square it; measured 6.8e-5
# at worst, 1e-3 leaves 15x.
STATE = 1e-3
# TRPO's 2nd to 4th iterations: the rounding above times the conjugate-gradient solve's
# amplification, measured at most 8e-4 in a chaotic run; 1e-2 leaves 12x.
CONDITIONED = 1e-2
CONFIGS = {
  "ppo_brakes": Golden(
    tiny(
      num_evals=3,
      target_kl=0.02,
      learning_rate_schedule="ADAPTIVE_KL",
      clipping_epsilon_value=0.2,
      max_grad_norm=0.5,
    ),
    tight=(ROUNDING,) * 8,
  ),
  "trpo": Golden(
    tiny(num_evals=2, algorithm="trpo", state_dependent_std=False),
    tight=(ROUNDING,) + (CONDITIONED,) * 3,
  ),
}
# A run's mean of a metric over its 8 iterations, as a fraction of that metric's scale. With the
# first half of the run held to CONDITIONED, the most that iterations which branched (a
# termination a step earlier, a line-search step taken at another size) can move the mean is
# their share of it: 1/8 of the metric's range for each. Measured in the chaotic trpo run above:
# 0.057 at worst (the clip fraction: whole samples crossing the clip). 0.15 allows for one whole
# iteration's branch and the drift before it.
LOOSE = 0.15
# Compared only on the recording platform: the residual ||F x - g|| of the conjugate-gradient
# solve is itself of the size of the rounding of F x (about 1e-5 of ||g||), so it differs by
# several percent between ISAs from the first iteration on, and its run mean by up to 23%.
ROUNDING_SIZED = ("metrics/trpo/cg_residual",)
STATE_PARTS = ("params", "opt_state", "normalizer", "learning_rate", "env_state", "key", "monitor")


def platform() -> str:
  """What the compiled bits depend on: JAX's version, the CPU's vector instructions and the
  XLA flags that change code generation (`--xla_cpu_max_isa` rounds like an older CPU)."""
  flags = set()
  if Path("/proc/cpuinfo").exists():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
        break
  isa = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4")))
  xla = " ".join(re.findall(r"--xla_cpu_\S+", os.environ.get("XLA_FLAGS", "")))
  return f"jax {jax.__version__}; {jax.default_backend()}; {' '.join(isa)}" + (
    f"; {xla}" if xla else ""
  )


def snapshot(cfg) -> dict[str, np.ndarray]:
  """What `train` returns for `cfg`, as flat numpy arrays."""
  result = train(cfg, show_progress=False)
  arrays = {f"metrics/{k}": np.asarray(v) for k, v in result.metrics.items() if not is_timing(k)}
  arrays |= {f"evals/{k}": np.asarray(v) for k, v in result.evals.items() if not is_timing(k)}
  for part in STATE_PARTS:
    leaves = jax.tree.leaves(jax.device_get(getattr(result.state, part)))
    arrays |= {f"state/{part}/{i:03d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
  arrays["health"] = np.asarray(json.dumps(result.health, sort_keys=True))
  return arrays


def scale(values: np.ndarray) -> float:
  """A quantity's size in the run: its largest magnitude (a tiny floor for all-zero ones)."""
  return max(float(np.max(np.abs(values))), 1e-12) if values.size else 1e-12


def compare(got: dict, recorded: dict, golden: Golden) -> list[str]:
  """The differences of `got` from `recorded` beyond what another platform explains, each
  named; empty when the run is the recorded one up to float rounding."""
  failures = []
  iterations = len(recorded["metrics/approx_kl"])
  whole_run_tight = len(golden.tight) >= iterations
  for key, want in recorded.items():
    if key == "health" or key in ROUNDING_SIZED:
      continue  # the health report's floats are compared through the metrics they come from
    want, have = np.asarray(want, np.float64), np.asarray(got[key], np.float64)
    if not np.array_equal(np.isnan(have), np.isnan(want)):
      failures.append(f"{key}: NaN in other places")
      continue
    have, want = np.nan_to_num(have), np.nan_to_num(want)  # NaN: "none yet" (e.g. the monitor)
    size = scale(want)
    if key.startswith("metrics/"):
      for i, tolerance in enumerate(golden.tight[:iterations]):
        error = float(np.max(np.abs(have[i] - want[i]), initial=0.0)) / size
        if error > tolerance:
          failures.append(f"{key} iteration {i + 1}: {error:.2g} of its scale > {tolerance}")
    if key.startswith("state/"):
      if whole_run_tight:  # the final state is comparable only where the whole run is
        error = float(np.max(np.abs(have - want), initial=0.0)) / size
        if error > STATE:
          failures.append(f"{key}: {error:.2g} of its scale > {STATE}")
    elif abs(have.mean() - want.mean()) / size > LOOSE:
      error = abs(have.mean() - want.mean()) / size
      failures.append(f"{key} run mean: {error:.2g} of its scale > {LOOSE}")
  return failures


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_numbers_as_recorded(name):
  recorded = dict(np.load(GOLDEN / f"{name}.npz"))
  exact = str(recorded.pop("platform")) == platform()
  got = snapshot(CONFIGS[name].config)
  missing = sorted(set(recorded) - set(got))
  assert not missing, f"no longer produced: {missing}"
  if exact:
    for key, want in recorded.items():
      if key == "health":
        assert str(got[key]) == str(want)
      else:
        np.testing.assert_array_equal(got[key], want, err_msg=key)
  else:
    failures = compare(got, recorded, CONFIGS[name])
    assert not failures, "\n".join(failures)


def test_off_platform_rules_catch_a_real_change():
  """A 50% larger TRPO step bound: the first iteration's step is sqrt(1.5) = 1.22x longer, and
  the run's KL per iteration is 1.5x larger. The rules fail it twice over: in the first
  iteration (rounding is 1e-4 of the scale) and, independently, in the run's means (LOOSE)."""
  recorded = dict(np.load(GOLDEN / "trpo.npz"))
  recorded.pop("platform")
  changed = dataclasses.replace(CONFIGS["trpo"].config, trpo_max_kl=0.015)
  failures = compare(snapshot(changed), recorded, CONFIGS["trpo"])
  assert any(f.startswith("metrics/trpo/step_size iteration 1:") for f in failures), failures
  means = [f for f in failures if "run mean" in f]
  assert any(f.startswith(("metrics/update_kl ", "metrics/trpo/kl ")) for f in means), failures


if __name__ == "__main__":
  jax.config.update("jax_numpy_rank_promotion", "raise")  # as in conftest
  GOLDEN.mkdir(exist_ok=True)
  for name in sys.argv[1:] or CONFIGS:
    arrays = snapshot(CONFIGS[name].config)
    np.savez(GOLDEN / f"{name}.npz", platform=np.asarray(platform()), **arrays)
    print(f"recorded {GOLDEN / name}.npz on {platform()}")

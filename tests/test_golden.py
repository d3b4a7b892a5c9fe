"""Golden runs: a config and a seed give the same bits today as when the file was recorded.

`tests/golden/*.npz` holds, for two tiny configs (PPO with both KL brakes, value clipping and
gradient clipping; TRPO with a state-independent std), what `train` returned: every leaf of
the final TrainState, every per-iteration metric and evaluation (timings aside) and the health
report. A refactor that moves code around must reproduce them bit for bit on the CPU.

Bits depend on the compiled code, so they are compared exactly only where the file was
recorded (same JAX version and CPU instruction set, see `platform()`); elsewhere to float
tolerance. `python tests/test_golden.py` records the files again, for a change that is meant
to alter the numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import tiny

from ppo_jax import train
from ppo_jax.logger import is_timing

GOLDEN = Path(__file__).parent / "golden"
CONFIGS = {
  "ppo_brakes": tiny(
    num_evals=3,
    target_kl=0.02,
    learning_rate_schedule="ADAPTIVE_KL",
    clipping_epsilon_value=0.2,
    max_grad_norm=0.5,
  ),
  "trpo": tiny(num_evals=2, algorithm="trpo", state_dependent_std=False),
}
STATE_PARTS = ("params", "opt_state", "normalizer", "learning_rate", "env_state", "key", "monitor")


def platform() -> str:
  """What the compiled bits depend on: JAX's version and the CPU's vector instructions."""
  flags = set()
  if Path("/proc/cpuinfo").exists():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
        break
  isa = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4")))
  return f"jax {jax.__version__}; {jax.default_backend()}; {' '.join(isa)}"


def snapshot(name: str) -> dict[str, np.ndarray]:
  """What `train` returns for CONFIGS[name], as flat numpy arrays."""
  result = train(CONFIGS[name], show_progress=False)
  arrays = {f"metrics/{k}": np.asarray(v) for k, v in result.metrics.items() if not is_timing(k)}
  arrays |= {f"evals/{k}": np.asarray(v) for k, v in result.evals.items() if not is_timing(k)}
  for part in STATE_PARTS:
    leaves = jax.tree.leaves(jax.device_get(getattr(result.state, part)))
    arrays |= {f"state/{part}/{i:03d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
  arrays["health"] = np.asarray(json.dumps(result.health, sort_keys=True))
  return arrays


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_bits_as_recorded(name):
  recorded = dict(np.load(GOLDEN / f"{name}.npz"))
  exact = str(recorded.pop("platform")) == platform()
  got = snapshot(name)
  missing = sorted(set(recorded) - set(got))
  assert not missing, f"no longer produced: {missing}"
  for key, want in recorded.items():
    have = got[key]
    if key == "health" and exact:
      assert str(have) == str(want)
    elif key == "health":
      continue  # its floats are compared through the metrics they come from
    elif exact:
      np.testing.assert_array_equal(have, want, err_msg=key)
    else:  # another CPU or JAX: the same run up to float rounding
      np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-6, err_msg=key)


if __name__ == "__main__":
  jax.config.update("jax_numpy_rank_promotion", "raise")  # as in conftest
  GOLDEN.mkdir(exist_ok=True)
  for name in sys.argv[1:] or CONFIGS:
    np.savez(GOLDEN / f"{name}.npz", platform=np.asarray(platform()), **snapshot(name))
    print(f"recorded {GOLDEN / name}.npz on {platform()}")

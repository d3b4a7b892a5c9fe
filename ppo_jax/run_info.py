"""What a run ran on: JAX and its devices, the env's physics, the precision of matrix products.

The config says what was asked for (`env_backend=None` is "the default"); this says what ran,
which depends on the machine: Playground's default physics is MuJoCo Warp on a GPU that has it
and JAX elsewhere (`envs.playground_backend`). The run directory keeps it in run_info.json
(rewritten by each process that resumes the run) and the console shows it in one line.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import jax

import envs
from ppo_jax.config import PPOConfig

RUN_INFO_FILE = "run_info.json"


def describe(cfg: PPOConfig, env: envs.Environment, devices: list[jax.Device]) -> dict[str, Any]:
  """run_info.json's record: the env and the physics that steps it, the matmul precision, JAX's
  version and backend, and the devices the run uses (by kind) of how many processes."""
  return {
    "env": cfg.env,
    "env_backend": env.backend,
    "matmul_precision": cfg.matmul_precision,
    "jax": jax.__version__,
    "jax_backend": jax.default_backend(),
    "devices": dict(Counter(device.device_kind for device in devices)),
    "processes": jax.process_count(),
  }


def line(info: dict[str, Any]) -> str:
  """The console's line: "<env> on <physics>, matmul precision <p>; JAX <v> on 1 NVIDIA H100"."""
  physics = f" on {info['env_backend']!r} physics" if info["env_backend"] else ""
  devices = ", ".join(f"{count} {kind}" for kind, count in info["devices"].items())
  return (
    f"{info['env']}{physics}, matmul precision {info['matmul_precision']!r}; JAX "
    f"{info['jax']} ({info['jax_backend']}) on {devices}"
  )


def write(run_dir: Path, info: dict[str, Any]) -> None:
  """Writes run_info.json whole, then renames it into place."""
  path = Path(run_dir) / RUN_INFO_FILE
  partial = path.with_name(path.name + ".partial")
  partial.write_text(json.dumps(info, indent=2) + "\n")
  os.replace(partial, path)

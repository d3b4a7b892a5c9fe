"""What `train` returns: the final state and policy, the records, the timings, the health."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppo_jax.config import PPOConfig
from ppo_jax.step import TrainState
from ppo_jax.types import ActorCriticParams


@dataclasses.dataclass
class TrainResult:
  """What `train` returns.

  Attributes:
    params: final network parameters.
    normalizer: final observation statistics.
    metrics: per-iteration numpy arrays; "<name>_per_epoch" ones are [iterations, epochs].
    evals: per-evaluation numpy arrays ("env_steps", "eval/episode_return", ...).
    policy: jittable deterministic policy(obs, key=None) -> action; it takes the env's own
      observation (the whole dict of a dict observation; `load_policy` takes the policy's entry).
    state: the final TrainState (on the device).
    config: the config trained.
    timings: seconds per phase of this process's run ("setup", "env", "compile", "init",
      "train", "eval", "checkpoint", "log", "analysis", "save"), "unaccounted" and "wall".
    compile_times: seconds each program ("init", "chunk", "evaluator", "eval_keys") took.
    health: the health report (label counts, largest-KL update and its comparison, trends).
    run_dir: the run directory, if any.
  """

  params: ActorCriticParams
  normalizer: Any
  metrics: dict[str, np.ndarray]
  evals: dict[str, np.ndarray]
  policy: Callable[..., jax.Array]
  state: TrainState
  config: PPOConfig
  timings: dict[str, float]
  compile_times: dict[str, float]
  health: dict[str, Any]
  run_dir: Path | None = None

  @property
  def compile_seconds(self) -> float:
    """Wall seconds spent compiling the run's programs."""
    return self.timings.get("compile", 0.0)

  @property
  def train_seconds(self) -> float:
    """Seconds spent in the training chunks (evaluations and the rest excluded)."""
    return self.timings.get("train", 0.0)

"""The trust-region monitor: failure labels per iteration, decided on the device.

Each iteration the train step hands the monitor a few signals of its update (`Signals`); the
monitor keeps a short history in the train state (`MonitorState`) and returns one boolean per
label. The thresholds are config fields (see `PPOConfig`); the labels are

  kl_spike          the update's KL is far above the target or its recent median (and above
                    a floor), or above a ceiling
  clip_saturated    a large fraction of the batch's ratios ended outside the clip band
  clip_idle         almost nothing clipped for many updates in a row: updates too timid
  entropy_collapse  the mean action std is below a floor, or fell fast in one iteration
  return_drop       the rollout return fell sharply below its recent median
  nonfinite         NaN or Inf in the rollout, loss, gradients or parameters: the update
                    was skipped and the state kept as it was

The monitor also keeps the policy before and after the update with the largest KL so far, so
that `train` can compare the two at the end of a run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ppo_jax.config import PPOConfig
from ppo_jax.normalization import RunningStatistics

LABELS = (
  "kl_spike",
  "clip_saturated",
  "clip_idle",
  "entropy_collapse",
  "return_drop",
  "nonfinite",
)


@struct.dataclass
class PolicySnapshot:
  """A policy as it acted: its params and the observation statistics it saw."""

  policy: Any
  normalizer: RunningStatistics


@struct.dataclass
class MonitorState:
  """What the labels remember between iterations.

  Attributes:
    kl_history: [monitor_window] update KLs of the last iterations (NaN where none yet).
    return_history: [monitor_window] rollout returns of the last iterations (NaN where none).
    action_std: [] mean action std after the previous update (NaN before the first).
    clip_idle_streak: [] idle updates in a row.
    nonfinite_streak: [] nonfinite iterations in a row.
    largest_kl: [] the largest update KL so far (-inf before the first update).
    largest_kl_iteration: [] the iteration (1-based) of that update; 0 before it.
    before: the policy that collected the rollout of that update.
    after: the policy that update produced.
  """

  kl_history: jax.Array
  return_history: jax.Array
  action_std: jax.Array
  clip_idle_streak: jax.Array
  nonfinite_streak: jax.Array
  largest_kl: jax.Array
  largest_kl_iteration: jax.Array
  before: PolicySnapshot
  after: PolicySnapshot


class Signals(NamedTuple):
  """One iteration's measurements the labels are decided from (all scalars).

  Attributes:
    update_kl: closed-form KL from the rollout policy to the updated one, whole batch
      (`trust_region.update_kl`).
    clip_fraction: fraction of the batch's ratios outside the clip band after the update.
    action_std: mean action std of the updated policy over the batch.
    episode_return: mean return of the episodes that ended in the rollout (NaN if none).
    finite: False when anything in the iteration was NaN or Inf.
  """

  update_kl: jax.Array
  clip_fraction: jax.Array
  action_std: jax.Array
  episode_return: jax.Array
  finite: jax.Array


def init(cfg: PPOConfig, snapshot: PolicySnapshot) -> MonitorState:
  """An empty history; both snapshots hold `snapshot` until a first update is recorded."""
  nan = jnp.full((cfg.monitor_window,), jnp.nan, jnp.float32)
  return MonitorState(
    kl_history=nan,
    return_history=nan,
    action_std=jnp.full((), jnp.nan, jnp.float32),
    clip_idle_streak=jnp.zeros((), jnp.int32),
    nonfinite_streak=jnp.zeros((), jnp.int32),
    largest_kl=jnp.full((), -jnp.inf, jnp.float32),
    largest_kl_iteration=jnp.zeros((), jnp.int32),
    before=snapshot,
    after=snapshot,
  )


def kl_reference(cfg: PPOConfig, kl_history: jax.Array) -> jax.Array:
  """The KL a spike is measured against: the configured target, else the recent median
  (NaN, so no spike, until half the window is filled)."""
  if cfg.target_kl is not None:
    return jnp.asarray(cfg.target_kl, jnp.float32)
  if cfg.learning_rate_schedule == "ADAPTIVE_KL":
    return jnp.asarray(cfg.desired_kl, jnp.float32)
  return _recent_median(kl_history)


def kl_spike_threshold(cfg: PPOConfig, monitor: MonitorState) -> jax.Array:
  """[] the update KL above which `kl_spike` fires this iteration."""
  # A spike is above either bound; fmin ignores a NaN reference (none yet).
  relative = jnp.maximum(
    cfg.kl_spike_factor * kl_reference(cfg, monitor.kl_history), cfg.kl_spike_min
  )
  return jnp.fmin(relative, cfg.kl_spike_max)


def _recent_median(history: jax.Array) -> jax.Array:
  filled = jnp.sum(jnp.isfinite(history))
  return jnp.where(2 * filled >= history.shape[0], jnp.nanmedian(history), jnp.nan)


def _push(history: jax.Array, value: jax.Array, keep: jax.Array) -> jax.Array:
  """Appends `value` to the window (dropping the oldest) where `keep`, else leaves it."""
  return jnp.where(keep, jnp.append(history[1:], value), history)


def observe(
  cfg: PPOConfig, monitor: MonitorState, signals: Signals
) -> tuple[MonitorState, dict[str, jax.Array]]:
  """Decides this iteration's labels and moves the history on.

  A nonfinite iteration changes nothing but the nonfinite streak: its measurements are not
  evidence about the policy that is kept.

  Returns:
    (the new monitor state, {label: [] bool} for every label in LABELS).
  """
  ok = signals.finite
  threshold = kl_spike_threshold(cfg, monitor)
  idle = signals.clip_fraction <= cfg.clip_idle_fraction
  clip_idle_streak = jnp.where(
    ok, jnp.where(idle, monitor.clip_idle_streak + 1, 0), monitor.clip_idle_streak
  )
  return_median = _recent_median(monitor.return_history)
  std_drop = 1.0 - signals.action_std / monitor.action_std  # NaN before the first update

  labels = {
    "kl_spike": ok & (signals.update_kl > threshold),
    "clip_saturated": ok & (signals.clip_fraction > cfg.clip_saturated_fraction),
    "clip_idle": ok & (clip_idle_streak >= cfg.clip_idle_iterations),
    "entropy_collapse": ok
    & ((signals.action_std < cfg.entropy_collapse_std) | (std_drop > cfg.entropy_collapse_drop)),
    "return_drop": ok
    & (signals.episode_return < return_median - cfg.return_drop_fraction * jnp.abs(return_median)),
    "nonfinite": ~ok,
  }
  monitor = monitor.replace(
    kl_history=_push(monitor.kl_history, signals.update_kl, ok),
    return_history=_push(
      monitor.return_history, signals.episode_return, ok & jnp.isfinite(signals.episode_return)
    ),
    action_std=jnp.where(ok, signals.action_std, monitor.action_std),
    clip_idle_streak=clip_idle_streak,
    nonfinite_streak=jnp.where(ok, 0, monitor.nonfinite_streak + 1),
  )
  return monitor, labels


def record_largest(
  monitor: MonitorState,
  update_kl: jax.Array,
  finite: jax.Array,
  iteration: jax.Array,
  before: PolicySnapshot,
  after: PolicySnapshot,
) -> MonitorState:
  """Keeps (before, after) when this finite update has the largest KL so far."""
  larger = finite & (update_kl > monitor.largest_kl)
  return monitor.replace(
    largest_kl=jnp.where(larger, update_kl, monitor.largest_kl),
    largest_kl_iteration=jnp.where(larger, iteration, monitor.largest_kl_iteration),
    before=optax.tree.where(larger, before, monitor.before),
    after=optax.tree.where(larger, after, monitor.after),
  )


def watch(
  cfg: PPOConfig,
  monitor: MonitorState,
  signals: Signals,
  iteration: jax.Array,
  before: PolicySnapshot,
  after: PolicySnapshot,
) -> tuple[MonitorState, dict[str, jax.Array]]:
  """One iteration of the monitor: the labels, the history, the largest-KL snapshots.

  Args:
    iteration: [] the iteration's number, from 1.
    before, after: the policy that collected the rollout and the one the update left.
  Returns:
    (the new monitor state, metrics: "label/<name>" for every label, the KL spike
    threshold the iteration was held to and the nonfinite streak).
  """
  threshold = kl_spike_threshold(cfg, monitor)
  monitor, labels = observe(cfg, monitor, signals)
  monitor = record_largest(monitor, signals.update_kl, signals.finite, iteration, before, after)
  metrics = {f"label/{name}": fired for name, fired in labels.items()}
  metrics["kl_spike_threshold"] = threshold
  metrics["nonfinite_streak"] = monitor.nonfinite_streak
  return monitor, metrics

"""What the failure labels told, for the console and health.json, and the comparison of the
policies around the largest-KL update (host side).

The labels themselves are decided on the device (`ppo_jax.monitor`); this module reads the
per-iteration records the host fetched once per chunk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ppo_jax import checkpoint
from ppo_jax.config import PPOConfig
from ppo_jax.logger import column
from ppo_jax.monitor import LABELS, MonitorState
from ppo_jax.rollout import Episodes, Trace, summarize, trace_arrays

HEALTH_FILE = "health.json"
LARGEST_KL_DIR = "largest_kl"


def _fired(record: dict[str, Any], label: str) -> bool:
  return bool(record.get(f"label/{label}"))


def _why(cfg: PPOConfig, label: str, r: dict[str, Any]) -> str:
  """One clause on what made `label` fire in record `r`."""
  f = lambda name: "n/a" if r.get(name) is None else f"{r[name]:.4g}"  # noqa: E731
  return {
    "kl_spike": f"update KL {f('update_kl')} > {f('kl_spike_threshold')}",
    "clip_saturated": (
      f"clip fraction {f('update_clip_fraction')} > {cfg.clip_saturated_fraction}"
    ),
    "clip_idle": (
      f"clip fraction <= {cfg.clip_idle_fraction} for {cfg.clip_idle_iterations}+ updates"
    ),
    "entropy_collapse": f"mean action std {f('update_action_std')}",
    "return_drop": f"rollout return {f('episode_return')}",
    "nonfinite": f"{nonfinite_source(r)}; the update was skipped",
  }[label]


def nonfinite_source(record: dict[str, Any]) -> str:
  """Where a nonfinite iteration's NaN or Inf showed first."""
  if record.get("nonfinite_rollout"):
    return "NaN/Inf in the rollout's observations or rewards"
  return "NaN/Inf in the loss, gradients or parameters"


class LabelAlerts:
  """Console lines for fired labels: a warning the first time each fires, then counts.

  Args:
    cfg: the run's config (for the thresholds in the messages).
    records: records already logged (a resumed run), counted but not announced again.
  """

  def __init__(self, cfg: PPOConfig, records: list[dict[str, Any]] = ()):
    self.cfg = cfg
    self.counts = label_counts(records)

  def update(self, records: list[dict[str, Any]]) -> list[str]:
    """Lines to print for a chunk's records (none when no label fired)."""
    lines, repeated = [], []
    for label in LABELS:
      fired = [r for r in records if _fired(r, label)]
      if not fired:
        continue
      if self.counts[label] == 0:
        first = fired[0]
        seed = f" (seed {first['seed']})" if self.cfg.num_seeds > 1 else ""
        lines.append(
          f"warning: {label} at iteration {first['iteration']}{seed} "
          f"({_why(self.cfg, label, first)}); later ones are counted"
        )
      elif fired:
        repeated.append(label)
      self.counts[label] += len(fired)
    if repeated:
      counts = ", ".join(f"{label} {self.counts[label]}" for label in LABELS if self.counts[label])
      lines.append(f"labels so far: {counts}")
    return lines


def label_counts(records: list[dict[str, Any]]) -> dict[str, int]:
  return {label: sum(_fired(r, label) for r in records) for label in LABELS}


def trend(values: np.ndarray) -> dict[str, float | None]:
  """first, last, min, max, and the change from the first to the last quarter's mean."""
  finite = values[np.isfinite(values)]
  if finite.size == 0:
    return {key: None for key in ("first", "last", "min", "max", "change")}
  quarter = max(1, finite.size // 4)
  return {
    "first": float(finite[0]),
    "last": float(finite[-1]),
    "min": float(finite.min()),
    "max": float(finite.max()),
    "change": float(finite[-quarter:].mean() - finite[:quarter].mean()),
  }


def report(
  cfg: PPOConfig, records: list[dict[str, Any]], largest_kl: dict[str, Any] | None = None
) -> dict[str, Any]:
  """The health report of a run from its per-iteration records (JSON-ready).

  Args:
    largest_kl: what `train` found comparing the policies around the largest-KL update.
  """
  update_kl = column(records, "update_kl")
  iterations = [r["iteration"] for r in records]
  counts = label_counts(records)
  largest = None
  if np.isfinite(update_kl).any():
    i = int(np.nanargmax(update_kl))
    largest = {"iteration": iterations[i], "update_kl": float(update_kl[i])}
  return {
    "iterations": len(records),
    "label_counts": counts,
    "label_first_iteration": {
      label: next((r["iteration"] for r in records if _fired(r, label)), None) for label in LABELS
    },
    "largest_kl_update": largest,
    "largest_kl_comparison": largest_kl,
    "update_kl": trend(update_kl),
    "clip_fraction": trend(column(records, "update_clip_fraction")),
    "action_std": trend(column(records, "update_action_std")),
    "termination_rate": trend(column(records, "termination_rate")),
    "action_saturation": trend(column(records, "action_saturation")),
  }


def format_report(health: dict[str, Any]) -> str:
  """A few console lines of a health report (of a panel: its label counts per seed)."""
  if "seeds" in health:
    lines = [f"health over {health['iterations']} iterations, per seed:"]
    for seed, seed_report in health["seeds"].items():
      counts = seed_report["label_counts"]
      fired = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"
      lines.append(f"  seed {seed}: labels fired: {fired}")
    return "\n".join(lines)
  n = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"  # noqa: E731
  fired = ", ".join(f"{k} {v}" for k, v in health["label_counts"].items() if v) or "none"
  lines = [f"health over {health['iterations']} iterations: labels fired: {fired}"]
  largest = health["largest_kl_update"]
  if largest is not None:
    lines.append(
      f"  largest update KL {n(largest['update_kl'])} at iteration {largest['iteration']}"
    )
  comparison = health.get("largest_kl_comparison")
  if comparison is not None:
    b, a = comparison["before"], comparison["after"]
    lines.append(
      f"  that update, same seeds: return {n(b['mean_return'])} -> {n(a['mean_return'])}, "
      f"terminated {n(b['termination_rate'])} -> {n(a['termination_rate'])}"
    )
  for name in ("clip_fraction", "action_std", "termination_rate", "action_saturation"):
    t = health[name]
    lines.append(
      f"  {name}: {n(t['first'])} -> {n(t['last'])} (range {n(t['min'])}..{n(t['max'])})"
    )
  return "\n".join(lines)


def panel_report(
  cfg: PPOConfig,
  seeds: list[int],
  records: list[dict[str, Any]],
  comparisons: list[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
  """`report` of a run; for a seed panel, one per seed under "seeds" and the summed counts."""
  comparisons = comparisons or [None] * len(seeds)
  if len(seeds) == 1:
    return report(cfg, records, comparisons[0])
  per_seed = {
    str(seed): report(cfg, [r for r in records if r.get("seed") == seed], comparison)
    for seed, comparison in zip(seeds, comparisons, strict=True)
  }
  return {
    "iterations": per_seed[str(seeds[0])]["iterations"],
    "label_counts": {
      label: sum(r["label_counts"][label] for r in per_seed.values()) for label in LABELS
    },
    "seeds": per_seed,
  }


def largest_kl_dir(run_dir: Path | None, seed: int, num_seeds: int) -> Path | None:
  """Where a run keeps its largest-KL comparison (one folder per seed of a panel)."""
  if run_dir is None:
    return None
  return run_dir / LARGEST_KL_DIR if num_seeds == 1 else run_dir / LARGEST_KL_DIR / f"seed_{seed}"


def compare_largest_kl(
  cfg: PPOConfig,
  monitor_state: MonitorState,
  before: tuple[Episodes, Trace],
  after: tuple[Episodes, Trace],
  out_dir: Path | None,
  observation_size: int,
  action_size: int,
) -> dict[str, Any]:
  """What the policies before and after the largest-KL update did on the same seeds.

  `before` and `after` are what the evaluator returned for the two policies (fetched), run
  with the same key: one episode in each of `num_eval_envs` envs, the same initial states
  and the same noise. With `out_dir`, writes before_trace.npz, after_trace.npz (see
  `Trace`), comparison.json and the two policies there (`load_policy(out_dir / "before")`).

  Returns:
    {"iteration", "update_kl", "episodes", "deterministic", "before": {...}, "after": {...}}
    with per-episode returns, lengths and terminations of each.
  """
  comparison = {
    "iteration": int(monitor_state.largest_kl_iteration),
    "update_kl": float(monitor_state.largest_kl),
    "episodes": cfg.num_eval_envs,
    "deterministic": cfg.deterministic_eval,
  }
  for name, (episodes, trace), snapshot in (
    ("before", before, monitor_state.before),
    ("after", after, monitor_state.after),
  ):
    comparison[name] = summarize(episodes)
    if out_dir is not None:
      out_dir.mkdir(parents=True, exist_ok=True)
      np.savez(out_dir / f"{name}_trace.npz", **trace_arrays(trace))
      checkpoint.save_policy(
        out_dir / name,
        cfg,
        observation_size,
        action_size,
        snapshot.policy,
        snapshot.normalizer,
      )
  if out_dir is not None:
    (out_dir / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
  return comparison

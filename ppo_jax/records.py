"""A run directory's records read back for plots: config.json, metrics.jsonl, evals.jsonl.

Files may still be growing: a half-written last line is skipped, and so are keys a reader does
not know. Values that are not numbers (null for NaN, a missing key) read as NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ppo_jax.logger import CONFIG_FILE, EVALS_FILE, METRICS_FILE, column, number

_STEPS = "env_steps"


class Run(NamedTuple):
  """One run directory, read.

  Attributes:
    label: legend text, "<dir name> (<env>)".
    config: config.json, or {} when it is missing or unreadable.
    metrics: metrics.jsonl, one dict per iteration (and seed, for a seed panel).
    evals: evals.jsonl, one dict per evaluation (and seed).
  """

  label: str
  config: dict
  metrics: list[dict]
  evals: list[dict]


def read_jsonl(path: Path) -> list[dict]:
  """Records of a JSONL file; [] if it is missing. Lines that do not parse are skipped."""
  if not path.is_file():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # blank, or the trainer is mid-write
      continue
    if isinstance(record, dict):
      records.append(record)
  return records


def read_run(run_dir: str | Path, name: str | None = None) -> Run:
  """Reads a run directory.

  Args:
    run_dir: directory holding metrics.jsonl (and optionally config.json, evals.jsonl).
    name: legend name; the directory's name if None.
  Returns:
    The Run.
  Raises:
    FileNotFoundError: naming the directory, when it or its metrics.jsonl does not exist.
  """
  run_dir = Path(run_dir)
  if not run_dir.is_dir():
    raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
  if not (run_dir / METRICS_FILE).is_file():
    raise FileNotFoundError(f"run directory {str(run_dir)!r} has no {METRICS_FILE}")
  try:
    config = json.loads((run_dir / CONFIG_FILE).read_text())
  except (OSError, json.JSONDecodeError):
    config = {}
  if not isinstance(config, dict):
    config = {}
  name = name or run_dir.resolve().name
  label = f"{name} ({config['env']})" if config.get("env") else name
  return Run(label, config, read_jsonl(run_dir / METRICS_FILE), read_jsonl(run_dir / EVALS_FILE))


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(env steps, values) of a scalar key, keeping only records where both are finite.

  Values that share a step (the seeds of a seed panel) are averaged.

  Returns:
    Two float arrays of the same length [N], possibly empty.
  """
  xy = np.stack([column(records, _STEPS), column(records, key)], axis=-1).reshape(-1, 2)
  xy = xy[np.isfinite(xy).all(axis=1)]
  steps, inverse = np.unique(xy[:, 0], return_inverse=True)
  if steps.size == len(xy):
    return xy[:, 0], xy[:, 1]
  return steps, np.bincount(inverse, weights=xy[:, 1]) / np.bincount(inverse)


def fired(records: list[dict], label: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  """(env steps, value of `key`) of the records where failure label `label` fired.

  Each record keeps its own value (a seed panel's seeds are not averaged): the value that
  made the label fire. It is NaN where the record has none (a nonfinite update's metrics).

  Returns:
    Two float arrays of the same length [N], possibly empty.
  """
  hits = [r for r in records if number(r.get(f"label/{label}")) > 0]  # true, or 1
  steps = column(hits, _STEPS)
  keep = np.isfinite(steps)
  return steps[keep], column(hits, key)[keep]


def per_epoch(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Flattens a per-epoch list metric ("<name>_per_epoch").

  Epoch counts may differ between iterations (an early stop leaves fewer, or NaN, entries).

  Returns:
    (env steps, epoch index from 0, value), three arrays [N] with finite values only.
  """
  rows = []
  for record in records:
    steps, values = number(record.get(_STEPS)), record.get(key)
    if not math.isfinite(steps) or not isinstance(values, list):
      continue
    rows += [(steps, epoch, number(v)) for epoch, v in enumerate(values)]
  rows = np.array([r for r in rows if math.isfinite(r[2])], float).reshape(-1, 3)
  return rows[:, 0], rows[:, 1], rows[:, 2]


def epoch_mean(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(env steps, mean over epochs) per iteration of a per-epoch list metric."""
  steps, _, values = per_epoch(records, key)
  if not steps.size:
    return steps, values
  xs, inverse = np.unique(steps, return_inverse=True)
  return xs, np.bincount(inverse, weights=values) / np.bincount(inverse)

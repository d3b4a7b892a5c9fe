"""Plot one or more training runs: returns, trust-region diagnostics and safety signals, with
the failure labels marked where they fired, against env steps (`ppo_jax.plot.make_figure`).

python -m experiments.plot RUN_DIR [RUN_DIR ...] [--output PATH]

A run directory holds `config.json`, `metrics.jsonl` (one object per iteration) and
`evals.jsonl` (one object per evaluation), as written by the trainer. Files may still be
growing: a half-written last line is skipped, and so are keys the plot does not know.
`train(cfg, run_dir)` already writes RUN_DIR/plot.png at the end of a run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ppo_jax.logger import METRICS_FILE
from ppo_jax.plot import PLOT_FILE, plot_runs


def main(argv: list[str] | None = None) -> Path:
  """CLI entry point; returns the path written."""
  parser = argparse.ArgumentParser(
    prog="python -m experiments.plot",
    description="Plot training runs (metrics.jsonl, evals.jsonl) against env steps.",
  )
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to overlay")
  parser.add_argument(
    "--output",
    "-o",
    help=f"PNG to write (default: RUN_DIR/{PLOT_FILE} for one run, ./comparison.png for several)",
  )
  args = parser.parse_args(argv)
  for run_dir in args.run_dirs:
    if not Path(run_dir).is_dir():
      parser.error(f"run directory {run_dir!r} does not exist")
    if not (Path(run_dir) / METRICS_FILE).is_file():
      parser.error(f"run directory {run_dir!r} has no {METRICS_FILE}")
  output = args.output
  if output is None:
    output = Path(args.run_dirs[0]) / PLOT_FILE if len(args.run_dirs) == 1 else "comparison.png"
  path = plot_runs(args.run_dirs, output)
  print(path)
  return path


if __name__ == "__main__":
  main()

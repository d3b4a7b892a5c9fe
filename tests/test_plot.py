"""experiments.plot: PNGs from synthetic run directories, and the CLI's defaults and errors."""

import json
import math

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_hex

from experiments import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
  root,
  name,
  env="brax/inverted_pendulum",
  iterations=20,
  seed=0,
  evals=True,
  schedule="LINEAR",
  drop=(),
):
  """Writes a synthetic run directory the way the trainer does; returns its path."""
  run_dir = root / name
  run_dir.mkdir(parents=True)
  config = {
    "env": env,
    "num_updates_per_batch": 4,
    "learning_rate_schedule": schedule,
    "target_kl": 0.02,
    "target_kl_factor": 1.5,
  }
  (run_dir / "config.json").write_text(json.dumps(config))
  lines = []
  for i in range(1, iterations + 1):
    kl = 0.002 * (1 + seed) * (1 + 0.1 * i)
    record = {
      "iteration": i,
      "env_steps": 5120 * i,
      "wall_time": 0.5 * i,
      "sps": 10240.0,
      # No episode has finished in the first iteration: the trainer writes null for NaN.
      "episode_return": None if i == 1 else (10.0 + 3 * seed) * i,
      "approx_kl": kl * 2.5,
      "clip_fraction": 0.05 + 0.02 * seed + 0.01 * math.sin(i),
      "entropy": 1.5 - 0.2 * seed - 0.03 * i,
      "action_std": 0.7 - 0.01 * i,
      "action_std_min": 0.5 - 0.01 * i,
      "explained_variance": -3.0 if i == 1 else 1.0 - 1.0 / (i + seed),
      "learning_rate": 3e-4 * (1 - i / (iterations + 1)) / (1 + seed),
      # An early stop in the last iterations leaves fewer epochs (and a NaN).
      "approx_kl_per_epoch": [kl * (e + 1) for e in range(4)] if i < 18 else [kl, 2 * kl, None],
      "clip_fraction_per_epoch": [0.01, 0.03, 0.05, 0.07],
      "some_future_key": {"nested": [1, 2]},
    }
    lines.append(json.dumps({k: v for k, v in record.items() if k not in drop}))
  (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"iteration": 21, "env_')
  if evals:
    rows = [
      {
        "env_steps": 5120 * i,
        "wall_time": 0.5 * i,
        "eval/episode_return": (12.0 + 3 * seed) * i,
        "eval/episode_return_std": 2.0 + i,
        "eval/episode_length": 100.0,
        "eval/termination_rate": 0.5,
      }
      for i in range(0, iterations + 1, 5)
    ]
    (run_dir / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return run_dir


def assert_png(path):
  assert path.is_file()
  assert path.read_bytes()[:8] == PNG_MAGIC
  image = matplotlib.image.imread(path)
  height, width = image.shape[:2]
  assert 600 <= width <= 4000 and 800 <= height <= 4000 and height > width


def test_one_run(tmp_path):
  run_dir = make_run(tmp_path, "run_a")
  output = plot.plot_runs([run_dir], tmp_path / "out" / "one.png")
  assert output == tmp_path / "out" / "one.png"
  assert_png(output)


def test_two_runs(tmp_path):
  runs = [
    make_run(tmp_path, "a"),
    make_run(tmp_path, "b", env="playground/CartpoleBalance", seed=1, schedule="ADAPTIVE_KL"),
  ]
  assert_png(plot.plot_runs([str(r) for r in runs], tmp_path / "two.png"))
  # Every panel draws both runs, one color each, and the legend names both.
  figure = plot.make_figure(runs)
  titled = [ax for ax in figure.axes if ax.get_title(loc="left")]
  assert len(titled) == 6
  for ax in titled:
    colors = {to_hex(line.get_color()) for line in ax.get_lines() if len(line.get_xdata())}
    assert {to_hex("C0"), to_hex("C1")} <= colors, ax.get_title(loc="left")
  legend = [text.get_text() for text in figure.legends[0].get_texts()]
  assert len(legend) == 2 and "playground/CartpoleBalance" in legend[1]


def test_empty_and_sparse_runs(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "metrics.jsonl").write_text("")  # no config.json, no evals.jsonl
  # No evals, no per-epoch lists (the KL panel falls back to approx_kl), no learning rate, ...
  drop = ("approx_kl_per_epoch", "learning_rate", "explained_variance", "entropy", "action_std")
  sparse = make_run(tmp_path, "sparse", iterations=3, evals=False, drop=drop)
  assert_png(plot.plot_runs([empty, sparse], tmp_path / "sparse.png"))


def test_readers_skip_nulls_and_torn_lines(tmp_path):
  run = plot.read_run(make_run(tmp_path, "r"))
  assert run.label == "r (brax/inverted_pendulum)"
  assert len(run.metrics) == 20  # the half-written 21st line is skipped
  steps, returns = plot.series(run.metrics, "episode_return")
  assert steps[0] == 2 * 5120 and len(returns) == 19
  steps, epoch, values = plot.per_epoch(run.metrics, "approx_kl_per_epoch")
  assert len(values) == 17 * 4 + 3 * 2 and epoch.max() == 3
  x, mean = plot.epoch_mean(run.metrics, "approx_kl_per_epoch")
  assert len(x) == 20 and mean[0] == pytest.approx(0.002 * 1.1 * 2.5)


def test_cli_default_output_one_run(tmp_path, capsys):
  run_dir = make_run(tmp_path, "run_a")
  path = plot.main([str(run_dir)])
  assert path == run_dir / "plot.png"
  assert_png(path)
  assert capsys.readouterr().out.strip() == str(run_dir / "plot.png")


def test_cli_default_output_several_runs(tmp_path, monkeypatch, capsys):
  runs = [str(make_run(tmp_path, "a")), str(make_run(tmp_path, "b"))]
  monkeypatch.chdir(tmp_path)
  plot.main(runs)
  assert_png(tmp_path / "comparison.png")
  assert capsys.readouterr().out.strip() == "comparison.png"


@pytest.mark.parametrize("without_metrics", [False, True])
def test_cli_bad_run_dir(tmp_path, capsys, without_metrics):
  good = make_run(tmp_path, "good")
  bad = tmp_path / "no_such_run"
  if without_metrics:
    bad.mkdir()
  with pytest.raises(SystemExit) as exit_info:
    plot.main([str(good), str(bad), "--output", str(tmp_path / "x.png")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "no_such_run" in err and "Traceback" not in err
  assert ("metrics.jsonl" in err) == without_metrics
  assert not (tmp_path / "x.png").exists()


def test_series_averages_the_seeds_of_a_panel():
  records = [
    {"env_steps": 10, "seed": 0, "episode_return": 1.0},
    {"env_steps": 10, "seed": 1, "episode_return": 3.0},
    {"env_steps": 20, "seed": 0, "episode_return": 5.0},
    {"env_steps": 20, "seed": 1, "episode_return": None},
  ]
  steps, values = plot.series(records, "episode_return")
  np.testing.assert_array_equal(steps, [10, 20])
  np.testing.assert_array_equal(values, [2.0, 5.0])

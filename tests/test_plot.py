"""ppo_jax.plot and experiments.plot: figures from synthetic run directories (each panel's
lines, the safety panel, the failure-label marks), PNGs, and the CLI's defaults and errors."""

import json
import math

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_hex

from experiments import plot as plot_cli
from ppo_jax import plot, records
from ppo_jax.monitor import LABELS

FIRED = {
  "kl_spike": (5, 12),
  "clip_saturated": (7,),
  "clip_idle": (15, 16),
  "entropy_collapse": (10,),
  "return_drop": (8,),
  "nonfinite": (13,),
}
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
  fired=None,
):
  """Writes a synthetic run directory the way the trainer does; returns its path.

  Args:
    fired: {label: iterations where it fires}; `FIRED` if None.
  """
  fired = FIRED if fired is None else fired
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
      "learning_rate": (
        3e-4 if schedule == "constant" else 3e-4 * (1 - i / (iterations + 1)) / (1 + seed)
      ),
      "update_kl": kl * 4,
      "update_clip_fraction": 0.06 + 0.02 * seed + 0.01 * math.cos(i),
      "update_action_std": 0.69 - 0.01 * i,
      # No episode fell in the first iteration: null, as NaN is written.
      "termination_rate": None if i == 1 else 0.5 / i,
      "action_saturation": 0.2 + 0.01 * i,
      **{f"label/{label}": i in fired.get(label, ()) for label in LABELS},
      # An early stop in the last iterations leaves fewer epochs (and a NaN).
      "approx_kl_per_epoch": [kl * (e + 1) for e in range(4)] if i < 18 else [kl, 2 * kl, None],
      "clip_fraction_per_epoch": [0.01, 0.03, 0.05, 0.07],
      "some_future_key": {"nested": [1, 2]},
    }
    if i in fired.get("nonfinite", ()):  # a skipped update's diagnostics are NaN
      record |= {"approx_kl": None, "update_kl": None, "update_clip_fraction": None}
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
  assert len(titled) == 7
  for ax in titled:
    colors = {to_hex(line.get_color()) for line in ax.get_lines() if len(line.get_xdata())}
    assert {to_hex("C0"), to_hex("C1")} <= colors, ax.get_title(loc="left")
  legend = [text.get_text() for text in figure.legends[0].get_texts()]
  assert len(legend) == 2 and "playground/CartpoleBalance" in legend[1]


def panels(figure):
  """{title: the panel's axes, its twin's included}: a twin shares its panel's position."""
  titled = {ax.get_title(loc="left"): ax for ax in figure.axes if ax.get_title(loc="left")}
  return {
    title: [
      other for other in figure.axes if other.get_position().bounds == ax.get_position().bounds
    ]
    for title, ax in titled.items()
  }


def lines(axes, label):
  """(x, y) of each line labelled `label` (a metric's key, or a failure label's name)."""
  return [
    (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
    for ax in axes
    for line in ax.get_lines()
    if line.get_label() == label
  ]


def legend_texts(axes):
  return {t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()}


def test_every_label_has_a_place_in_the_plot():
  assert set(plot.MARKS) | {"nonfinite"} == set(LABELS) == set(FIRED)


def test_panels_have_their_lines_the_safety_panel_and_the_label_marks(tmp_path):
  run_dir = make_run(tmp_path, "run", iterations=20)
  metrics = records.read_run(run_dir).metrics
  by_panel = panels(plot.make_figure([run_dir]))
  assert len(by_panel) == 7  # the learning rate changes: it has a panel
  panel_of = {title.split(":")[0].split(" (")[0]: axes for title, axes in by_panel.items()}
  expected = {  # panel -> metric lines it draws (from metrics.jsonl unless eval/)
    "Return": ["episode_return", "eval/episode_return"],
    "KL": ["approx_kl", "update_kl"],
    "Clip fraction": ["clip_fraction", "update_clip_fraction"],
    "Policy entropy and action std": ["entropy", "action_std", "action_std_min"],
    "Safety": ["termination_rate", "action_saturation", "eval/termination_rate"],
    "Learning rate": ["learning_rate"],
    "Explained variance of the value function": ["explained_variance"],
  }
  assert set(panel_of) == set(expected)
  for name, keys in expected.items():
    for key in keys:
      (x, y), *others = lines(panel_of[name], key)
      assert not others, (name, key)
      want_x, want_y = records.series(
        records.read_jsonl(
          run_dir / ("evals.jsonl" if key.startswith("eval/") else "metrics.jsonl")
        ),
        key,
      )
      if key == "approx_kl":  # drawn as the mean of the per-epoch values
        want_x, want_y = records.epoch_mean(metrics, "approx_kl_per_epoch")
      assert len(x) > 2, (name, key)
      np.testing.assert_allclose(x, want_x, err_msg=f"{name}: {key}")
      np.testing.assert_allclose(y, want_y, err_msg=f"{name}: {key}")
  # The safety panel's first point is the second iteration's: the first had no fall (null).
  ((x, y),) = lines(panel_of["Safety"], "termination_rate")
  assert x[0] == 2 * 5120 and y[0] == pytest.approx(0.25)

  # Each label on its metric's panel, at that metric's value where it fired, and in the legend.
  by_step = {m["env_steps"]: m for m in metrics}
  for label, panel in [
    ("kl_spike", "KL"),
    ("clip_saturated", "Clip fraction"),
    ("clip_idle", "Clip fraction"),
    ("entropy_collapse", "Policy entropy and action std"),
    ("return_drop", "Return"),
  ]:
    key = plot.MARKS[label][0]
    steps = [5120 * i for i in FIRED[label]]
    ((x, y),) = lines(panel_of[panel], label)
    np.testing.assert_array_equal(x, steps, err_msg=label)
    np.testing.assert_allclose(y, [by_step[s][key] for s in steps], err_msg=label)
    assert f"{label} fired" in legend_texts(panel_of[panel])
    for other, axes in panel_of.items():
      assert other == panel or not lines(axes, label), (label, other)
  # A nonfinite update: a vertical line on every panel.
  for name, axes in panel_of.items():
    ((x, _),) = lines(axes, "nonfinite")
    np.testing.assert_array_equal(x, [13 * 5120] * 2, err_msg=name)
    assert "nonfinite (update skipped)" in legend_texts(axes), name


def test_no_marks_where_no_label_fired(tmp_path):
  figure = plot.make_figure([make_run(tmp_path, "quiet", fired={})])
  for axes in panels(figure).values():
    assert not any(lines(axes, label) for label in LABELS)
    assert not any("fired" in text or "nonfinite" in text for text in legend_texts(axes))


def test_a_seed_panel_marks_each_seed_at_its_own_value(tmp_path):
  run_dir = tmp_path / "panel"
  run_dir.mkdir()
  rows = [
    {"env_steps": 10, "seed": 0, "update_kl": 0.01, "label/kl_spike": False},
    {"env_steps": 10, "seed": 1, "update_kl": 0.30, "label/kl_spike": True},
    {"env_steps": 20, "seed": 0, "update_kl": 0.20, "label/kl_spike": True},
    {"env_steps": 20, "seed": 1, "update_kl": 0.02, "label/kl_spike": None},
  ]
  (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  axes = panels(plot.make_figure([run_dir]))["KL: per epoch (k3), and of the whole update"]
  ((x, y),) = lines(axes, "update_kl")  # the seeds' mean
  np.testing.assert_allclose(y, [0.155, 0.11])
  ((x, y),) = lines(axes, "kl_spike")  # the seed that fired
  np.testing.assert_array_equal(x, [10, 20])
  np.testing.assert_allclose(y, [0.30, 0.20])


def test_a_constant_learning_rate_has_no_panel_but_a_legend_entry(tmp_path):
  runs = [
    make_run(tmp_path, "a", schedule="constant"),
    make_run(tmp_path, "b", schedule="constant"),
  ]
  figure = plot.make_figure(runs)
  titles = set(panels(figure))
  assert len(titles) == 6 and "Learning rate" not in titles
  legend = [text.get_text() for text in figure.legends[0].get_texts()]
  assert all(text.endswith(", constant learning rate 3.0e-04") for text in legend), legend
  # One changing rate brings the panel back, with distinct ticks, for every run.
  mixed = plot.make_figure([runs[0], make_run(tmp_path, "c", schedule="linear")])
  axes = panels(mixed)["Learning rate"]
  assert len(lines(axes, "learning_rate")) == 2
  mixed.canvas.draw()
  ticks = [t.get_text() for t in axes[0].get_yticklabels() if t.get_text()]
  assert len(ticks) == len(set(ticks)) > 1
  assert "constant" not in " ".join(t.get_text() for t in mixed.legends[0].get_texts())


def test_empty_and_sparse_runs(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "metrics.jsonl").write_text("")  # no config.json, no evals.jsonl
  # No evals, no per-epoch lists (the KL panel falls back to approx_kl), no learning rate, ...
  drop = ("approx_kl_per_epoch", "learning_rate", "explained_variance", "entropy", "action_std")
  sparse = make_run(tmp_path, "sparse", iterations=3, evals=False, drop=drop)
  assert_png(plot.plot_runs([empty, sparse], tmp_path / "sparse.png"))


def test_readers_skip_nulls_and_torn_lines(tmp_path):
  run = records.read_run(make_run(tmp_path, "r"))
  assert run.label == "r (brax/inverted_pendulum)"
  assert len(run.metrics) == 20  # the half-written 21st line is skipped
  steps, returns = records.series(run.metrics, "episode_return")
  assert steps[0] == 2 * 5120 and len(returns) == 19
  steps, epoch, values = records.per_epoch(run.metrics, "approx_kl_per_epoch")
  assert len(values) == 17 * 4 + 3 * 2 and epoch.max() == 3
  x, mean = records.epoch_mean(run.metrics, "approx_kl_per_epoch")
  assert len(x) == 20 and mean[0] == pytest.approx(0.002 * 1.1 * 2.5)


def test_cli_default_output_one_run(tmp_path, capsys):
  run_dir = make_run(tmp_path, "run_a")
  path = plot_cli.main([str(run_dir)])
  assert path == run_dir / "plot.png"
  assert_png(path)
  assert capsys.readouterr().out.strip() == str(run_dir / "plot.png")


def test_cli_default_output_several_runs(tmp_path, monkeypatch, capsys):
  runs = [str(make_run(tmp_path, "a")), str(make_run(tmp_path, "b"))]
  monkeypatch.chdir(tmp_path)
  plot_cli.main(runs)
  assert_png(tmp_path / "comparison.png")
  assert capsys.readouterr().out.strip() == "comparison.png"


@pytest.mark.parametrize("without_metrics", [False, True])
def test_cli_bad_run_dir(tmp_path, capsys, without_metrics):
  good = make_run(tmp_path, "good")
  bad = tmp_path / "no_such_run"
  if without_metrics:
    bad.mkdir()
  with pytest.raises(SystemExit) as exit_info:
    plot_cli.main([str(good), str(bad), "--output", str(tmp_path / "x.png")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "no_such_run" in err and "Traceback" not in err
  assert ("metrics.jsonl" in err) == without_metrics
  assert not (tmp_path / "x.png").exists()


def test_series_averages_the_seeds_of_a_panel():
  rows = [
    {"env_steps": 10, "seed": 0, "episode_return": 1.0},
    {"env_steps": 10, "seed": 1, "episode_return": 3.0},
    {"env_steps": 20, "seed": 0, "episode_return": 5.0},
    {"env_steps": 20, "seed": 1, "episode_return": None},
  ]
  steps, values = records.series(rows, "episode_return")
  np.testing.assert_array_equal(steps, [10, 20])
  np.testing.assert_array_equal(values, [2.0, 5.0])

"""Weights & Biases as a sink, offline only: a tiny run's values, config and plot read back from
its W&B run; resume goes on in the same W&B run; the CLI flags; the bad-input errors."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny

from experiments import train as train_cli
from ppo_jax import train
from ppo_jax.logger import (
  CONFIG_FILE,
  EVALS_FILE,
  METRICS_FILE,
  NOT_METRICS,
  WANDB_ID_FILE,
  RunLogger,
  check_wandb,
  tensorboard_tag,
)
from ppo_jax.plot import PLOT_FILE

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

SETTINGS = dict(project="ppo_jax-test", mode="offline")
BLOCK = 32768  # the LevelDB log format's block; a record's pieces never straddle one


def log_records(path: Path) -> list[wandb_internal_pb2.Record]:
  """The records of a run's .wandb file: a 7-byte header, then LevelDB log blocks of pieces
  (crc, length, type: 1 whole, 2 first, 3 middle, 4 last) that make protobuf Records."""
  data = path.read_bytes()
  assert data[:4] == b":W&B" and data[6] == 0, "not a version 0 .wandb file"
  records, pos, pieces = [], 7, b""
  while pos + 7 <= len(data):
    left = BLOCK - pos % BLOCK
    _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
    if left < 7 or (length, kind) == (0, 0):  # the zero padding at a block's end
      pos += left
      continue
    pieces += data[pos + 7 : pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      records.append(wandb_internal_pb2.Record.FromString(pieces))
      pieces = b""
  return records


def read_wandb_run(path: Path) -> dict:
  """A .wandb file's run id, config and history rows by step ({key: value}; a media value's
  fields are "<key>.<field>")."""
  run_id, config, rows = None, {}, {}
  for record in log_records(path):
    kind = record.WhichOneof("record_type")
    if kind == "run":
      run_id = record.run.run_id
      config |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
    elif kind == "config":
      config |= {item.key: json.loads(item.value_json) for item in record.config.update}
    elif kind == "history":
      row = {
        item.key or ".".join(item.nested_key): json.loads(item.value_json)
        for item in record.history.item
      }
      rows[row["_step"]] = row
  config.pop("_wandb", None)
  return dict(id=run_id, config=config, rows=rows)


def read_jsonl(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


def children() -> list[str]:
  """The names of this process's live child processes (from Linux's /proc)."""
  names = []
  for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
      text = stat.read_text()
    except OSError:  # it ended meanwhile
      continue
    state, parent = text[text.rindex(")") + 2 :].split()[:2]
    if int(parent) == os.getpid() and state != "Z":
      names.append(text[text.index("(") + 1 : text.rindex(")")])
  return names


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny run logged to W&B offline, then resumed (with nothing left to train); the run
  directory and its W&B runs, in the order they were made."""
  root = tmp_path_factory.mktemp("wandb")
  with pytest.MonkeyPatch.context() as env:
    for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR"):
      env.setenv(f"WANDB_{name}", str(root / "elsewhere" / name.lower()))
    env.setenv("WANDB_MODE", "offline")
    env.setenv("WANDB_SILENT", "true")
    env.setenv("WANDB_CONSOLE", "off")
    run_dir = root / "run"
    try:
      train(tiny(), run_dir, show_progress=False, wandb=SETTINGS)
      assert wandb.run is None  # finished
      train(tiny(), run_dir, resume=True, show_progress=False, wandb=SETTINGS)
    finally:
      wandb.teardown()  # stops the W&B service process, which outlives wandb.finish
  assert "wandb-core" not in children()
  files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
  return run_dir, [read_wandb_run(path) for path in files]


def test_values_are_those_of_the_records_under_their_tags(run):
  run_dir, (first, _) = run
  expected = {}  # {step: {tag: value}} of every number of metrics.jsonl, eval/ ones of evals.jsonl
  for record in read_jsonl(run_dir / METRICS_FILE):
    expected.setdefault(record["env_steps"], {}).update(
      (tensorboard_tag(name), value)
      for name, value in record.items()
      if isinstance(value, int | float) and name not in NOT_METRICS
    )
  for record in read_jsonl(run_dir / EVALS_FILE):
    evals = {n: v for n, v in record.items() if n.startswith("eval/") and v is not None}
    expected.setdefault(record["env_steps"], {}).update(evals)
  rows = {
    step: {k: v for k, v in row.items() if not k.startswith(("_", "plot."))}
    for step, row in first["rows"].items()
  }
  assert rows == expected
  assert {"train/episode_return", "epoch/approx_kl", "update/update_kl"} <= set(rows[256])
  evals = [step for step, row in rows.items() if "eval/episode_return" in row]
  assert evals == [0, 1024, 2048]  # the evaluation curve, at step = env_steps


def test_config_is_the_runs(run):
  run_dir, (first, _) = run
  assert first["config"] == json.loads((run_dir / CONFIG_FILE).read_text())
  assert first["config"]["num_envs"] == 8


def test_plot_is_logged_as_an_image(run):
  run_dir, (first, _) = run
  last = first["rows"][max(first["rows"])]
  assert last["plot._type"] == "image-file"
  assert last["plot.sha256"] == hashlib.sha256((run_dir / PLOT_FILE).read_bytes()).hexdigest()
  [saved] = (run_dir / "wandb").glob(f"offline-run-*-{first['id']}/files/{last['plot.path']}")
  assert saved.read_bytes() == (run_dir / PLOT_FILE).read_bytes()


def test_wandb_files_stay_in_the_run_directory_and_resume_goes_on_in_the_same_run(run):
  run_dir, runs = run
  assert [r["id"] for r in runs] == [(run_dir / WANDB_ID_FILE).read_text().strip()] * 2
  assert not (run_dir.parent / "elsewhere" / "dir").exists()  # WANDB_DIR went unused


@pytest.mark.parametrize(
  "bad",
  ["ppo_jax-test", ["project"], dict(project="p", projekt="q"), dict(project="p", config={})],
)
def test_bad_wandb_argument_fails_before_anything_is_built(bad, tmp_path):
  with pytest.raises(ValueError, match=r"wandb \(.*\) must be None or a dict of wandb.init"):
    train(tiny(), tmp_path / "run", wandb=bad)
  assert not (tmp_path / "run").exists()


def test_wandb_not_installed_names_the_extra(monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails
  with pytest.raises(ImportError, match=r'pip install -e "\.\[wandb\]"'):
    train(tiny(), tmp_path / "run", wandb=SETTINGS)
  assert not (tmp_path / "run").exists()
  with pytest.raises(SystemExit):
    train_cli.main(["--wandb_project", "p", "--runs", str(tmp_path)])
  assert 'pip install -e ".[wandb]"' in capsys.readouterr().err
  assert not list(tmp_path.iterdir())


def test_wandb_is_not_imported_without_it(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "wandb", None)
  assert check_wandb(None) is None
  log = RunLogger(tmp_path, 10, show_progress=False)
  log.log_iterations([{"iteration": 1, "env_steps": 10, "seed": 0, "episode_return": 1.0}])
  log.log_plot(tmp_path / PLOT_FILE)
  log.close()
  monkeypatch.undo()
  code = "import sys, ppo_jax, experiments.train; print('wandb' in sys.modules)"
  root = Path(__file__).parents[1]
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
  assert out.stdout.strip() == "False", out.stderr


def test_a_panel_logs_each_seed_under_its_own_tags_at_one_step():
  calls = []

  class Sink:  # stands in for WandbSink
    def log(self, values, step=None):
      calls.append((step, values))

    def close(self, failed):
      calls.append(("closed", failed))

  log = RunLogger(None, 16, show_progress=False, panel=True, wandb=Sink())
  log.log_iterations(
    [
      {"iteration": 1, "env_steps": 8, "seed": seed, "approx_kl": float(seed), "nan": None}
      for seed in (3, 4)
    ]
  )
  eval_fields = ("episode_return", "episode_return_std", "episode_length", "termination_rate")
  log.log_eval(
    {"env_steps": 8, "seed": 4, "wall_time": 1.0} | {f"eval/{n}": 1.0 for n in eval_fields}
  )
  log.close(failed=True)
  assert calls == [
    (8, {"epoch/seed_3/approx_kl": 3.0}),
    (8, {"epoch/seed_4/approx_kl": 4.0}),
    (8, {f"eval/seed_4/{n}": 1.0 for n in eval_fields}),
    ("closed", True),
  ]


class Stop(Exception):
  """Raised by a stand-in for train, to stop the CLI before it reads a result."""


def test_cli_flags_make_the_wandb_argument(monkeypatch, tmp_path):
  given = {}

  def fake_train(*args, **kwargs):
    given.update(kwargs)
    raise Stop

  monkeypatch.setattr(train_cli, "train", fake_train)
  flags = ["--wandb_project", "p", "--wandb_entity", "e", "--wandb_run_name", "r"]
  with pytest.raises(Stop):
    train_cli.main(["cartpole_balance", *flags, "--runs", str(tmp_path)])
  assert given["wandb"] == dict(project="p", entity="e", name="r")
  with pytest.raises(Stop):
    train_cli.main(["cartpole_balance", "--runs", str(tmp_path)])
  assert given["wandb"] is None


@pytest.mark.parametrize("flag", ["--wandb_entity", "--wandb_run_name"])
def test_cli_entity_or_name_without_project_is_an_error(flag, tmp_path, capsys):
  with pytest.raises(SystemExit) as info:
    train_cli.main(["cartpole_balance", flag, "x", "--runs", str(tmp_path)])
  assert info.value.code == 2
  assert "--wandb_entity and --wandb_run_name need --wandb_project" in capsys.readouterr().err
  assert not list(tmp_path.iterdir())

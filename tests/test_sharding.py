"""Every device, every host: a run laid out on 4 devices (forced CPU devices in a child
process) computes what one device computes, up to float reordering; a 4-device checkpoint
resumes on 1 device; a seed panel spreads its seeds; several processes through the CLI train
what one process does, and a process that dies stops the others."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import child_environment, tiny

from ppo_jax import sharding
from ppo_jax.logger import METRICS_FILE, JsonLines

ROOT = Path(__file__).parents[1]
# Float reordering (sums over devices in another order) after 8 iterations of a tiny run; the
# numbers of one device and of four agree far closer than seed-to-seed differences (~1e-1).
RTOL, ATOL = 1e-3, 1e-4


def test_an_env_count_the_devices_do_not_divide_is_named_before_compiling():
  devices = jax.devices()[:1] * 3  # the rule is checked before any mesh is made
  with pytest.raises(
    ValueError, match=r"num_envs \(8\) must be divisible by the device count \(3\)"
  ):
    sharding.make_layout(tiny(), devices)
  with pytest.raises(ValueError, match=r"num_eval_envs \(4\) .* device count \(3\)"):
    sharding.make_layout(
      tiny(num_envs=6, batch_size=6, num_minibatches=4, num_eval_envs=4), devices
    )
  assert sharding.make_layout(tiny(), jax.devices()[:1]) is None  # one device: no mesh at all


def test_seeds_go_to_devices_when_they_divide_the_panel():
  devices = jax.devices()[:1] * 2
  with pytest.raises(ValueError, match="num_envs"):  # 2 seeds would fit, 3 do not
    sharding.make_layout(tiny(num_seeds=3, num_envs=3, batch_size=3, num_minibatches=8), devices)


# Runs in a child with 4 CPU devices; argv: config JSON, run folder, output .npz.
CHILD = r"""
import json, sys
from pathlib import Path
import jax, numpy as np
from ppo_jax import PPOConfig, train

cfg, out, npz = PPOConfig(**json.loads(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
devices = jax.devices()
assert len(devices) == 4, devices
arrays = {}

def keep(name, result):
  for i, leaf in enumerate(jax.tree.leaves(jax.device_get(result.params))):
    arrays[f"{name}/params/{i}"] = np.asarray(leaf)
  for key in ("value_loss", "update_kl", "episode_return", "approx_kl", "learning_rate"):
    arrays[f"{name}/metrics/{key}"] = np.asarray(result.metrics[key])
  arrays[f"{name}/evals"] = np.asarray(result.evals["eval/episode_return"])

keep("one", train(cfg, show_progress=False, devices=devices[:1]))
four = train(cfg, out / "four", show_progress=False)
keep("four", four)
shards = [s.data.shape for s in jax.tree.leaves(four.state.env_state)[0].addressable_shards]
arrays["four/env_shards"] = np.array(shards)

class Stop(Exception):
  pass

def stop_after_first_chunk(record):
  if "iteration" in record:
    raise Stop

try:  # written on 4 devices, cut after its first chunk; resumed on 1 device
  train(cfg, out / "cut", show_progress=False, progress_fn=stop_after_first_chunk)
except Stop:
  pass
keep("resumed", train(cfg, out / "cut", resume=True, show_progress=False, devices=devices[:1]))
np.savez(npz, **arrays)
"""

# A seed panel on 2 of the 4 devices: each device trains one seed, as one device trains both.
PANEL_CHILD = r"""
import json, sys
import jax, numpy as np
from ppo_jax import PPOConfig, train

cfg, npz = PPOConfig(**json.loads(sys.argv[1])), sys.argv[3]
arrays = {}
for name, count in (("one", 1), ("two", 2)):
  result = train(cfg, show_progress=False, devices=jax.devices()[:count])
  for i, leaf in enumerate(jax.tree.leaves(jax.device_get(result.params))):
    arrays[f"{name}/params/{i}"] = np.asarray(leaf)
  arrays[f"{name}/value_loss"] = np.asarray(result.metrics["value_loss"])
  arrays[f"{name}/layout"] = np.asarray(str(getattr(result.state.env_state.obs.sharding, "spec", None)))
np.savez(npz, **arrays)
"""


def run_child(script: str, args: list[str], cache: Path, devices: int, timeout: float = 600):
  env = child_environment(cache)
  env["XLA_FLAGS"] = f"{env['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"
  return subprocess.run(
    [sys.executable, "-c", script, *args],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=timeout,
  )


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


def test_four_devices_compute_what_one_does(tmp_path):
  cfg = tiny()
  npz = tmp_path / "out.npz"
  done = run_child(CHILD, [json.dumps(cfg.to_dict()), str(tmp_path), str(npz)], tmp_path / "c", 4)
  assert done.returncode == 0, done.stderr[-3000:]
  out = dict(np.load(npz))
  # Every per-env leaf is split: each device holds num_envs / 4 envs (observations [2, 4]).
  assert out["four/env_shards"].tolist() == [[cfg.num_envs // 4, 4]] * 4
  for other in ("four", "resumed"):
    for key in [k for k in out if k.startswith("one/")]:
      assert_close(out[key.replace("one/", f"{other}/")], out[key], f"{other}: {key}")


@pytest.mark.slow  # ~1 min on two cores: two more compilations
def test_a_panel_spreads_its_seeds_over_the_devices(tmp_path):
  cfg, npz = tiny(num_seeds=2), tmp_path / "out.npz"
  done = run_child(PANEL_CHILD, [json.dumps(cfg.to_dict()), str(tmp_path), str(npz)], tmp_path, 4)
  assert done.returncode == 0, done.stderr[-3000:]
  out = dict(np.load(npz))
  assert str(out["two/layout"]) == "P('seeds',)"  # each device holds whole seeds
  for key in [k for k in out if k.startswith("one/") and not k.endswith("layout")]:
    assert_close(out[key.replace("one/", "two/")], out[key], key)


# Several processes: each a CLI training of the tiny config on 2 forced CPU devices.
TINY_CLI = [
  "cartpole_balance",
  *(
    "--num_envs 8 --batch_size 8 --num_minibatches 4 --unroll_length 8 --num_updates_per_batch 2"
    " --episode_length 100 --policy_hidden_layer_sizes 16,16 --value_hidden_layer_sizes 16,16"
    " --reward_scaling 1.0 --num_eval_envs 4 --num_timesteps 2048"
  ).split(),
]


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def launch(args: list[str], devices: int, cache: Path, log: Path) -> subprocess.Popen:
  env = child_environment(cache)
  env["XLA_FLAGS"] = f"{env['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"
  with log.open("w") as out:
    return subprocess.Popen(
      [sys.executable, "-m", "experiments.train", *args],
      stdout=out,
      stderr=subprocess.STDOUT,
      env=env,
      cwd=ROOT,
    )


def processes(
  run_dir: Path, cache: Path, evals: int, resume: bool = False
) -> list[subprocess.Popen]:
  address = f"127.0.0.1:{free_port()}"
  where = (  # a resumed run takes its config from its run directory
    ["--resume", str(run_dir)]
    if resume
    else [*TINY_CLI, "--run_dir", str(run_dir), "--num_evals", str(evals)]
  )
  return [
    launch(
      [*where, "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i)],
      devices=2,
      cache=cache,
      log=run_dir.with_name(f"{run_dir.name}.{'resume.' if resume else ''}{i}.log"),
    )
    for i in range(2)
  ]


def policy_params(run_dir: Path) -> list[np.ndarray]:
  from flax import serialization

  raw = serialization.msgpack_restore((run_dir / "policy" / "params.msgpack").read_bytes())
  return [np.asarray(leaf) for leaf in jax.tree.leaves(raw)]


@pytest.mark.slow  # ~4 min on two cores: four processes compile, and gloo is slow on one host
def test_two_processes_train_what_one_does_and_a_dead_one_stops_the_other(tmp_path):
  cache = tmp_path / "cache"
  # 2 processes x 2 devices against 1 process x 4 devices, through the CLI.
  pair = processes(tmp_path / "two", cache, evals=3)
  assert [p.wait(600) for p in pair] == [0, 0], (tmp_path / "two.0.log").read_text()[-3000:]
  alone = launch(
    [*TINY_CLI, "--run_dir", str(tmp_path / "one"), "--num_evals", "3"],
    4,
    cache,
    tmp_path / "one.log",
  )
  assert alone.wait(600) == 0, (tmp_path / "one.log").read_text()[-3000:]
  for got, want in zip(
    policy_params(tmp_path / "two"), policy_params(tmp_path / "one"), strict=True
  ):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  records = [JsonLines(tmp_path / name / METRICS_FILE).read() for name in ("two", "one")]
  for key in ("value_loss", "update_kl", "episode_return"):
    assert_close(*(np.array([r[key] for r in rs], float) for rs in records), key)

  # Process 1 dies once a checkpoint is written: process 0 stops with an error in bounded time.
  run_dir = tmp_path / "killed"
  pair = processes(run_dir, cache, evals=9)
  deadline = time.monotonic() + 600
  while not any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*")):
    assert time.monotonic() < deadline and pair[0].poll() is None
    time.sleep(0.2)
  pair[1].send_signal(signal.SIGKILL)
  killed = time.monotonic()
  code = pair[0].wait(120)
  assert code != 0 and time.monotonic() - killed < 60
  assert "another task died" in run_dir.with_name("killed.0.log").read_text()
  # Both started again: the run resumes from its latest checkpoint and finishes.
  pair = processes(run_dir, cache, evals=9, resume=True)
  assert [p.wait(600) for p in pair] == [0, 0], run_dir.with_name(
    "killed.resume.0.log"
  ).read_text()[-3000:]
  iterations = [r["iteration"] for r in JsonLines(run_dir / METRICS_FILE).read()]
  assert iterations == list(range(1, iterations[-1] + 1)) and iterations[-1] == 8

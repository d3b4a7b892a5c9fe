"""Defaults that follow MuJoCo Playground: its envs on MuJoCo Warp where a GPU has it, else on
JAX; float32 matrix products at "highest" precision in every program; and the run directory and
the console say which ran. The GPU is faked: JAX's backend and the mujoco_warp import."""

from __future__ import annotations

import importlib.util
import json
import re

import jax
import numpy as np
import pytest
from tiny import tiny

import envs
from ppo_jax import PPOConfig, programs, run_info
from ppo_jax.logger import CONFIG_FILE
from ppo_jax.runner import Runner
from ppo_jax.step import make_env_and_networks


@pytest.fixture
def platform(monkeypatch):
  """fake(gpu, warp): JAX's backend is "gpu" or "cpu"; mujoco_warp importable or not."""
  find_spec = importlib.util.find_spec

  def fake(gpu: bool, warp: bool) -> None:
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu" if gpu else "cpu")
    monkeypatch.setattr(
      importlib.util,
      "find_spec",
      lambda name, *args: (
        (object() if warp else None) if name == "mujoco_warp" else find_spec(name, *args)
      ),
    )

  return fake


@pytest.mark.parametrize(
  "gpu, warp, chosen", [(True, True, "warp"), (True, False, "jax"), (False, True, "jax")]
)
def test_playground_runs_on_warp_only_on_a_gpu_that_has_it(platform, gpu, warp, chosen):
  platform(gpu, warp)
  assert envs.playground_backend(None) == chosen
  assert envs.playground_backend("jax") == "jax"  # --env_backend overrides


@pytest.mark.parametrize("gpu, warp", [(True, False), (False, True), (False, False)])
def test_warp_asked_for_where_it_cannot_run_is_refused(platform, gpu, warp):
  platform(gpu, warp)
  with pytest.raises(ValueError, match=r"env_backend \('warp'\) must run on an NVIDIA GPU"):
    envs.make("playground/CartpoleBalance", backend="warp")


def test_make_hands_playground_the_implementation_chosen(platform, monkeypatch):
  from mujoco_playground import dm_control_suite

  asked = []
  load = dm_control_suite.load

  def recording_load(name, config_overrides=None, **kwargs):
    asked.append(config_overrides["impl"])
    return load(name, config_overrides={**config_overrides, "impl": "jax"}, **kwargs)

  monkeypatch.setattr(dm_control_suite, "load", recording_load)
  platform(gpu=True, warp=True)
  assert envs.make("playground/CartpoleBalance").backend == "warp"
  assert envs.make("playground/CartpoleBalance", backend="jax").backend == "jax"
  platform(gpu=False, warp=False)
  assert envs.make("playground/CartpoleBalance").backend == "jax"
  assert asked == ["warp", "jax", "jax"]
  assert envs.make("brax/inverted_pendulum").backend == "generalized"
  assert envs.make("builtin/cartpole_balance").backend is None


def test_the_run_directory_and_the_console_say_which_physics_ran(tmp_path, capsys):
  cfg = tiny(env="playground/CartpoleBalance")
  with jax.numpy_rank_promotion("allow"):  # MJX relies on rank promotion
    runner = Runner(cfg, tmp_path / "run", resume=False, show_progress=True)
  runner.log.close()
  info = json.loads((tmp_path / "run" / run_info.RUN_INFO_FILE).read_text())
  assert info["env_backend"] == "jax" and info["matmul_precision"] == "highest"
  assert info["jax_backend"] == "cpu" and sum(info["devices"].values()) == 1
  out = capsys.readouterr().out
  assert "playground/CartpoleBalance on 'jax' physics, matmul precision 'highest'" in out
  assert json.loads((tmp_path / "run" / CONFIG_FILE).read_text())["matmul_precision"] == "highest"


@pytest.mark.parametrize("precision, hlo", [("highest", "HIGHEST"), ("high", "HIGH")])
def test_every_matrix_product_of_the_programs_has_the_configured_precision(precision, hlo):
  cfg = tiny(matmul_precision=precision)
  env, networks = make_env_and_networks(cfg)
  keys = np.stack([jax.random.PRNGKey(0)])
  lowered, _ = programs.lower_programs(cfg, env, networks, None, keys, keys)
  for name in ("chunk", "evaluator"):  # the initial state has no matrix product
    products = re.findall(r"dot_general .*", lowered[name].as_text())
    assert products and all(f"precision = [{hlo}, {hlo}]" in line for line in products), name


def test_the_precision_is_checked_with_the_config():
  assert PPOConfig().matmul_precision == "highest"
  with pytest.raises(ValueError, match=r"matmul_precision \('tf32'\) must be one of"):
    PPOConfig(matmul_precision="tf32")

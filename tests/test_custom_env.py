"""One's own env, as docs/custom_env.md writes it: an MJX task from an MJCF string, defined outside
`envs/`, registered with `envs.register`, trained, cut off and resumed bit-identically, loaded,
evaluated and exported; a run whose env is not registered fails naming the env and the step."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from tiny import Interrupt, whole_and_resumed

import envs
import ppo_jax
from experiments import evaluate, export
from ppo_jax import load_policy, train

PAGE = Path(__file__).parents[1] / "docs" / "custom_env.md"
NAME = "mylab/slider_reach"
MODULE = "mylab_envs"


def python_blocks() -> tuple[str, str]:
  """(the env module, the training script) of the docs page."""
  blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
  (module,) = [b for b in blocks if "class SliderReach" in b]
  (script,) = [b for b in blocks if "train(cfg" in b]
  return module, script


def docs_config():
  """The config the page's training script builds (its `train` call is stopped)."""

  def stop(cfg, *args, **kwargs):
    raise Interrupt(cfg)

  with pytest.MonkeyPatch.context() as patch, pytest.raises(Interrupt) as info:
    patch.setattr(ppo_jax, "train", stop)  # what the script's `from ppo_jax import` gets
    exec(python_blocks()[1], {})
  return info.value.args[0]


@pytest.fixture
def module(tmp_path, monkeypatch):
  """The page's env module, importable as `mylab_envs` and imported (so registered); with
  rank promotion allowed, which MJX relies on."""
  (tmp_path / f"{MODULE}.py").write_text(python_blocks()[0])
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, MODULE, raising=False)
  monkeypatch.setattr(envs, "_REGISTERED", dict(envs.registered()))  # undone after the test
  importlib.import_module(MODULE)
  assert NAME in envs.available()
  with jax.numpy_rank_promotion("allow"):
    yield tmp_path


def test_a_registered_env_trains_resumes_loads_evaluates_and_exports(module, monkeypatch, capsys):
  cfg = dataclasses.replace(docs_config(), num_timesteps=4096, num_evals=3)
  assert cfg.num_iterations == 4 and cfg.iterations_per_chunk == 2
  whole, resumed = whole_and_resumed(cfg, module)
  chex.assert_trees_all_equal(jax.device_get(resumed.state), jax.device_get(whole.state))

  obs = np.array([[0.3, -0.1], [-0.9, 0.4]], np.float32)
  actions = np.asarray(load_policy(module / "cut", deterministic=True)(obs))
  assert actions.shape == (2, 1) and np.all(np.abs(actions) <= 1)

  out = evaluate.main([str(module / "cut"), "--episodes", "2", "--no-video"])
  results = json.loads((out / evaluate.RETURNS_FILE).read_text())
  assert results["env"] == NAME and results["max_episode_steps"] == 100

  onnx = export.main([str(module / "cut")])
  assert onnx.exists() and "differ by at most" in capsys.readouterr().out

  # In a process that has not imported the module: no resume, no evaluation ...
  monkeypatch.setattr(envs, "_REGISTERED", {})
  monkeypatch.delitem(sys.modules, MODULE)
  with pytest.raises(ValueError, match=rf"'{NAME}' is neither built in .* envs.register"):
    train(cfg, module / "cut", resume=True, show_progress=False)
  with pytest.raises(SystemExit) as info:
    evaluate.main([str(module / "cut"), "--no-video"])
  assert info.value.code == 2
  assert "--import MODULE" in capsys.readouterr().err
  # ... but the policy loads, and --import registers the env.
  np.testing.assert_array_equal(load_policy(module / "cut", deterministic=True)(obs), actions)
  again = evaluate.main([str(module / "cut"), "--episodes", "2", "--no-video", "--import", MODULE])
  assert json.loads((again / evaluate.RETURNS_FILE).read_text()) == results


@pytest.mark.slow  # 61,440 steps of MJX on the CPU: about 25 s
def test_the_docs_example_learns(module, monkeypatch):
  monkeypatch.chdir(module)
  namespace = {}
  exec(python_blocks()[1], namespace)
  returns = namespace["result"].evals["eval/episode_return"]
  # Measured 32.0 -> 80.5 of 100 (docs/custom_env.md); a policy that does not move scores ~30.
  assert returns[-1] >= 70 and returns[-1] >= returns[0] + 30, returns

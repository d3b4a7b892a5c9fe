"""Playground's robots: a clear error before anything compiles where MuJoCo Menagerie is not on
disk (never a download), dict observations where it is, and presets with Playground's
published settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mujoco_playground._src import mjx_env

import envs
from experiments.presets import PLAYGROUND_ROBOTS, PRESETS
from ppo_jax import PPOConfig


def test_missing_menagerie_is_a_value_error_naming_the_directory(tmp_path, monkeypatch):
  missing = tmp_path / "external_deps" / "mujoco_menagerie"
  monkeypatch.setattr(mjx_env, "MENAGERIE_PATH", missing)
  cloned = []
  monkeypatch.setattr(mjx_env, "_clone_with_progress", lambda *args: cloned.append(args))
  with pytest.raises(ValueError, match="needs MuJoCo Menagerie") as error:
    envs.make("playground/Go1JoystickFlatTerrain")
  assert str(missing) in str(error.value) and "git clone" in str(error.value)
  assert mjx_env.MENAGERIE_COMMIT_SHA in str(error.value)
  assert not cloned and not missing.exists()  # nothing was downloaded, nothing created


def test_the_dm_control_suite_needs_no_menagerie(tmp_path, monkeypatch):
  monkeypatch.setattr(mjx_env, "MENAGERIE_PATH", tmp_path / "missing")
  envs.check_playground_assets("CartpoleBalance")  # ships its model: no error


@pytest.mark.skipif(not mjx_env.MENAGERIE_PATH.exists(), reason="MuJoCo Menagerie not on disk")
def test_go1_makes_dict_observations_where_menagerie_exists():
  env = envs.make("playground/Go1JoystickFlatTerrain")
  assert set(env.observation_size) >= {"state", "privileged_state"}
  cfg = PRESETS["playground_go1_joystick_flat_terrain"]
  from ppo_jax.step import make_env_and_networks

  make_env_and_networks(cfg)  # the obs keys name entries the env has


def _published(name: str) -> dict:
  from mujoco_playground._src import locomotion
  from mujoco_playground.config import locomotion_params, manipulation_params

  source = locomotion_params if name in locomotion.ALL_ENVS else manipulation_params
  published = source.brax_ppo_config(name).to_dict()
  networks = published.pop("network_factory")
  return {**published, **networks}


@pytest.mark.parametrize("preset", sorted(PLAYGROUND_ROBOTS))
def test_robot_presets_hold_playgrounds_published_settings(preset):
  cfg = PRESETS[preset]
  name = cfg.env.partition("/")[2]
  published = _published(name)
  expected = dataclasses.replace(cfg, **published)  # PPOConfig takes every published keyword
  assert isinstance(expected, PPOConfig)
  for key, value in published.items():
    if key == "num_evals":  # may be lowered so that the steps round up by 10% at most
      assert cfg.total_env_steps <= 1.1 * published["num_timesteps"], key
      continue
    assert np.all(getattr(cfg, key) == value), (preset, key)

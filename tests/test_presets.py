"""Tests of `experiments.presets`: every preset validates and names an env that builds.

Built-in and Playground envs are made (a few seconds each, never stepped). Making a Brax env
and reading its sizes takes 20-90 s on a 2-core CPU, so the default suite only checks that
Brax presets name an available env; `pytest -m slow` makes them too.
"""

from __future__ import annotations

import jax
import pytest

import envs
from experiments import train as train_cli
from experiments.presets import PLAYGROUND_ROBOTS, PRESETS
from ppo_jax import PPOConfig
from ppo_jax.step import make_env

NAMES = sorted(PRESETS)
BRAX = [n for n in NAMES if PRESETS[n].env.startswith("brax/")]
# Playground's robots need MuJoCo Menagerie on disk (tests/test_playground_robots.py).
OTHERS = [n for n in NAMES if n not in BRAX and n not in PLAYGROUND_ROBOTS]


def _default_episode_length(env_name: str) -> int:
  """The time limit a source publishes for the env (what its tuned configs train with)."""
  source, _, name = env_name.partition("/")
  if source == "builtin":
    return envs.builtin.TASKS[name]().default_episode_length
  if source == "playground":
    from mujoco_playground import registry

    return int(registry.get_default_config(name).episode_length)
  return 1000  # Brax's envs and published configs.


def _rank_promotion(cfg: PPOConfig):
  """MJX (Playground, Brax's "mjx" pipeline) relies on implicit rank promotion, which the
  strict conftest forbids; these envs trace their reset to find their observation size."""
  uses_mjx = cfg.env.startswith("playground/") or cfg.env_backend == "mjx"
  return jax.numpy_rank_promotion("allow" if uses_mjx else "raise")


@pytest.mark.parametrize("name", NAMES)
def test_preset_validates_and_round_trips(name):
  cfg = PRESETS[name]
  # The constructor runs every check; a copy from the dict form must be equal.
  assert PPOConfig(**cfg.to_dict()) == cfg
  assert cfg.episode_length == _default_episode_length(cfg.env)
  # Chunking rounds num_timesteps up; the rounding must not add much training.
  assert cfg.num_timesteps <= cfg.total_env_steps <= 1.1 * cfg.num_timesteps


def test_default_is_brax_inverted_pendulum_on_the_cpu_pipeline():
  assert PRESETS["default"] is PRESETS["brax_inverted_pendulum"]
  assert PRESETS["default"].env == "brax/inverted_pendulum"
  assert PRESETS["default"].env_backend is None


def test_brax_presets_use_mjx_except_the_cpu_ones():
  """The default task and its TRPO preset keep Brax's own default pipeline (the CPU's fastest for
  it); the CPU-budget reacher runs on the positional one."""
  for name in BRAX:
    expected = {"brax/inverted_pendulum": None, "brax/reacher": "positional"}
    assert PRESETS[name].env_backend == expected.get(PRESETS[name].env, "mjx"), name


@pytest.mark.parametrize("name", BRAX)
def test_brax_preset_names_an_available_env(name):
  assert PRESETS[name].env in envs.available()


@pytest.mark.parametrize("name", OTHERS)
def test_preset_env_builds(name):
  cfg = PRESETS[name]
  with _rank_promotion(cfg):
    _check_env(cfg, make_env(cfg))


@pytest.mark.slow
@pytest.mark.parametrize("name", BRAX)
def test_brax_preset_env_builds(name):
  cfg = PRESETS[name]
  with _rank_promotion(cfg):
    env = make_env(cfg)
    _check_env(cfg, env)
  assert env.core.backend == (cfg.env_backend or "generalized")


def _check_env(cfg: PPOConfig, env: envs.Environment) -> None:
  assert env.name == cfg.env
  assert env.episode_length == cfg.episode_length
  assert env.action_repeat == cfg.action_repeat
  assert env.max_episode_steps * cfg.action_repeat == cfg.episode_length
  assert all(size > 0 for size in jax.tree.leaves(env.observation_size)) and env.action_size > 0


def test_list_shows_every_preset(capsys):
  train_cli.main(["--list"])
  lines = capsys.readouterr().out.splitlines()
  listed = {line.split()[0]: line for line in lines if line.strip()}
  assert set(listed) == set(PRESETS)
  for name, cfg in PRESETS.items():
    assert cfg.env in listed[name]

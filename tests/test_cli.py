"""The command line's bad-input paths: typos get the closest name; nothing trains here."""

from pathlib import Path

import pytest

import envs
from experiments import memory
from experiments.train import build_parser, config_from_args, main, parse_args
from ppo_jax import PPOConfig


def error_of(argv: list[str], capsys) -> str:
  """The message argparse prints before exiting with status 2."""
  with pytest.raises(SystemExit) as info:
    main(argv)
  assert info.value.code == 2
  return capsys.readouterr().err


@pytest.mark.parametrize(
  "argv, unknown, closest",
  [
    (["--lerning_rate", "1e-3"], "--lerning_rate", "--learning_rate"),
    (["cartpole_balance", "--lerning_rate=1e-3"], "--lerning_rate", "--learning_rate"),
    (["--num_env", "8"], "--num_env", "--num_envs"),
    (["--gae_lamda", "0.9"], "--gae_lamda", "--gae_lambda"),
    (["--run-dir", "x"], "--run-dir", "--run_dir"),
  ],
)
def test_unknown_option_names_the_closest(argv, unknown, closest, capsys):
  assert f"unknown option {unknown}; did you mean {closest}?" in error_of(argv, capsys)


def test_prefix_of_an_option_is_no_abbreviation(capsys):
  # argparse's default would take "--learning" for --learning_rate (or fail as ambiguous).
  message = error_of(["--learning", "1e-3"], capsys)
  assert "unknown option --learning" in message


def test_unknown_option_without_a_close_name(capsys):
  message = error_of(["--zzz", "1"], capsys)
  assert "unknown option --zzz" in message
  assert "did you mean" not in message


def test_unknown_preset_lists_presets_and_the_closest(capsys):
  message = error_of(["cartpole_balanse"], capsys)
  assert "unknown preset 'cartpole_balanse'; did you mean cartpole_balance?" in message
  assert "pendulum_swingup" in message and "brax_ant" in message


@pytest.mark.parametrize(
  "env, closest",
  [
    ("brax/invertd_pendulum", "brax/inverted_pendulum"),
    ("playground/CartpoleBalanse", "playground/CartpoleBalance"),
    ("builtin/cartpole", "builtin/cartpole_balance"),
    ("brx/ant", "brax/ant"),
  ],
)
def test_unknown_env_lists_the_source_and_the_closest(env, closest):
  with pytest.raises(ValueError, match=f"did you mean '{closest}'") as info:
    envs.make(env)
  source = closest.partition("/")[0]
  listed = {"brax": "humanoid", "playground": "CheetahRun", "builtin": "pendulum_swingup"}[source]
  assert listed in str(info.value)


def test_unknown_env_fails_before_a_run_directory(tmp_path, capsys):
  message = error_of(
    ["cartpole_balance", "--env", "builtin/cartpole", "--runs", str(tmp_path)], capsys
  )
  assert "did you mean 'builtin/cartpole_balance'?" in message
  assert not list(tmp_path.iterdir())


def test_help_gives_every_field_its_meaning():
  text = " ".join(build_parser().format_help().split())
  for name, meaning in PPOConfig.field_help().items():
    assert f"--{name}" in text and " ".join(meaning.split()) in text, name


def test_bad_value_names_the_field(capsys):
  assert "gae_lambda (2.0)" in error_of(["cartpole_balance", "--gae_lambda", "2.0"], capsys)


def test_overrides_parse_into_the_config(tmp_path):
  parser = build_parser()
  args = parse_args(
    parser,
    [
      "cartpole_balance",
      "--learning_rate",
      "1e-3",
      "--policy_hidden_layer_sizes",
      "8,8",
      "--max_grad_norm",
      "none",
      "--normalize_observations=false",
      "--runs",
      str(tmp_path),
    ],
  )
  cfg, run_dir, resume = config_from_args(parser, args)
  assert cfg.learning_rate == 1e-3
  assert cfg.policy_hidden_layer_sizes == (8, 8)
  assert cfg.max_grad_norm is None
  assert cfg.normalize_observations is False
  assert cfg.env == "builtin/cartpole_balance"
  assert not resume
  assert run_dir.parent == Path(tmp_path) and run_dir.name.startswith("cartpole_balance-")
  assert run_dir.is_dir() and not list(run_dir.iterdir())  # made empty, for train() to fill


def test_memory_fit_on_synthetic_numbers():
  # RSS = 1 GiB + 0.5 MiB per env, exactly.
  sizes = [256, 1024, 4096]
  a, b = memory.fit_line(sizes, [memory.GIB + n * 2**19 for n in sizes])
  assert a == pytest.approx(memory.GIB) and b == pytest.approx(2**19)
  assert memory.max_num_envs(a, b, 3 * memory.GIB) == 4096
  assert memory.max_num_envs(a, 0.0, 3 * memory.GIB) is None
  rows = [memory.Measurement(n, 80 * n, 30.0, n / 1000, 0, memory.GIB + n * 2**19) for n in sizes]
  summary = memory.summarize(rows, limit_gib=24)
  assert "1.00 GiB + 0.500 MiB * num_envs" in summary
  assert "47,104 (extrapolated" in summary
  assert "4096" in memory.format_table(rows)
  with pytest.raises(ValueError, match="two distinct"):
    memory.fit_line([256, 256], [1.0, 2.0])

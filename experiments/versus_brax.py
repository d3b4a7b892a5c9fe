"""Brax's own PPO trainer against ours on the same envs, with the same settings and seeds.

python -m experiments.versus_brax ENV [ENV ...] [--seeds N] [--out DIR] [--brax_from DIR]
    [--field value ...]

ENV is a MuJoCo Playground DM Control Suite name (`CartpoleBalance`), a Brax env name
(`inverted_pendulum`), a built-in task (`cartpole_balance`) or a full name
(`playground/CartpoleBalance`). The settings are `presets.dm_control_cpu` for a Playground DM
Control Suite env, else the env's preset when there is one, else PPOConfig's defaults, with every
`--field value` applied; `brax_arguments` gives Brax's `ppo.train` the same values. Brax trains
each seed in turn; ours trains them as one vmapped panel (`num_seeds`).

OUT/<env>/ gets table.md and table.csv (per trainer: the evaluation return at every matched
evaluation, mean and 95% Student t interval over seeds; the wall time of all seeds, compile
and evaluations included; env steps per second of that wall time), Brax's curves with the
config and seeds that made them (brax.json) and our run directory (ours/). `--brax_from` takes
Brax's curves from an earlier comparison's brax.json instead of training Brax again (Brax's
trainer is the slow side), only where Brax was given the same settings and seeds there. OUT/table.md and table.csv summarize every env,
and OUT/comparison.png overlays the two trainers' return curves, a panel per env.

Brax's trainer calls `jax.device_put_replicated`, which JAX 0.10 removed; `replicated_put`
provides it for the duration of the call only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import envs
from experiments import presets
from experiments.tables import Row, mean_and_interval, plot_band, write_tables
from experiments.train import add_config_options, parse_args
from ppo_jax import PPOConfig, logger, train
from ppo_jax.brax_keywords import NETWORK_KEYWORDS

TRAINERS = ("brax", "ours")


@dataclasses.dataclass(frozen=True)
class Curves:
  """One trainer's evaluations on one env.

  Attributes:
    steps: [points] env steps of each evaluation (the first at 0).
    returns: [seeds, points] evaluation return (mean over the evaluation envs).
    wall_seconds: wall time of every seed's training call, added up.
  """

  steps: np.ndarray
  returns: np.ndarray
  wall_seconds: float


def resolve_env(name: str) -> str:
  """A short env name -> "<source>/<name>" (Playground first, then Brax, then built-in)."""
  if "/" in name:
    envs.check_name(name)
    return name
  for source in ("playground", "brax", "builtin"):
    full = f"{source}/{name}"
    if full in envs.available():
      return full
  match = envs.did_you_mean(name, [n.partition("/")[2] for n in envs.available()])
  hint = f"; did you mean {match!r}?" if match else ""
  raise ValueError(f"unknown env {name!r}{hint} (see envs.available())")


def base_config(env: str) -> PPOConfig:
  """`presets.dm_control_cpu` for a Playground DM Control Suite env (one set of settings for
  every such task), else the first preset for `env`, else the DM Control settings for another
  Playground env, else PPOConfig's defaults."""
  from mujoco_playground import registry

  source, _, name = env.partition("/")
  preset = next((c for c in presets.PRESETS.values() if c.env == env), None)
  if source == "playground" and (preset is None or name in registry.dm_control_suite.ALL_ENVS):
    return presets.dm_control_cpu(name)
  return preset if preset is not None else PPOConfig(env=env)


def brax_settings(cfg: PPOConfig) -> dict:
  """What Brax's trainer is given for the run `cfg` describes (seed apart), as plain values:
  the env and its episode length, every field of a `ppo.train` keyword's name, and under
  "network" the fields of `make_ppo_networks` keywords.

  Brax's GAE gives every truncated step a zero advantage whatever its bootstrap_on_timeout
  (whose True adds a bonus where the env reports info["time_out"], which Brax's wrappers never
  set: of Brax's envs, inverted_pendulum sets it to its fall, not to a time limit), so Brax
  always gets False: `bootstrap_on_timeout=False` makes ours do the same.

  Raises:
    ValueError: `cfg` uses something Brax's trainer does not have.
  """
  from brax.training.agents.ppo import train as brax_train

  beyond = {
    "algorithm": cfg.algorithm != "ppo",
    "target_kl": cfg.target_kl is not None,
    "max_update_kl": cfg.max_update_kl is not None,
    "learning_rate_schedule": cfg.learning_rate_schedule == "LINEAR",
  }
  for field, used in beyond.items():
    if used:
      raise ValueError(
        f"{field} ({getattr(cfg, field)!r}) has no counterpart in Brax's ppo.train; "
        "the comparison needs settings both trainers have"
      )
  keywords = inspect.signature(brax_train.train).parameters
  settings = {
    field.name: getattr(cfg, field.name)
    for field in dataclasses.fields(cfg)
    if field.name in keywords and field.name != "seed"
  }
  settings["bootstrap_on_timeout"] = False
  settings["env"], settings["env_backend"] = cfg.env, cfg.env_backend
  settings["network"] = {name: getattr(cfg, name) for name in NETWORK_KEYWORDS}
  return json.loads(json.dumps(settings))  # tuples as lists, as brax.json keeps them


def brax_arguments(cfg: PPOConfig) -> dict:
  """Brax's `ppo.train` keyword arguments for `brax_settings(cfg)`, the network keywords bound
  into `network_factory`.

  Raises:
    ValueError: `cfg` uses something Brax's trainer does not have.
  """
  from brax.training.agents.ppo import networks as brax_networks
  from flax import linen

  arguments = brax_settings(cfg)
  del arguments["env"], arguments["env_backend"]
  networks = arguments.pop("network")
  networks["activation"] = getattr(linen, cfg.activation)
  for name in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
    networks[name] = tuple(networks[name])
  arguments["network_factory"] = functools.partial(brax_networks.make_ppo_networks, **networks)
  return arguments


def device_put_replicated(tree, devices):
  """JAX's removed `device_put_replicated`: each leaf stacked once per device, the stack
  placed with one slice on each device (a NamedSharding over a one-axis mesh)."""
  sharding = NamedSharding(Mesh(np.array(devices), ("devices",)), PartitionSpec("devices"))
  return jax.tree.map(lambda x: jax.device_put(jnp.stack([x] * len(devices)), sharding), tree)


@contextlib.contextmanager
def replicated_put():
  """`jax.device_put_replicated` for Brax's trainer, while the block runs."""
  if hasattr(jax, "device_put_replicated"):  # a JAX that still has it
    yield
    return
  jax.device_put_replicated = device_put_replicated
  try:
    yield
  finally:
    del jax.device_put_replicated


def brax_environment(env: envs.Environment):
  """(the env for Brax's trainer, its wrap_env_fn or None for Brax's own wrappers)."""
  source = env.name.partition("/")[0]
  if source == "playground":
    from mujoco_playground import wrapper

    return env.core, wrapper.wrap_for_brax_training
  if source == "brax":
    return env.core, None
  return _builtin_as_brax(env.core), None


def _builtin_as_brax(core):
  """A built-in task behind Brax's Env interface (its state as the pipeline state)."""
  from brax.envs.base import Env, State

  class BuiltinEnv(Env):
    observation_size = core.observation_size
    action_size = core.action_size
    backend = "builtin"

    def reset(self, rng):
      s = core.reset(rng)
      return State(pipeline_state=s, obs=s.obs, reward=s.reward, done=s.done, metrics=s.metrics)

    def step(self, state, action):
      s = core.step(state.pipeline_state, action)
      # Brax's wrappers add metrics of their own; the task's are updated among them.
      metrics = {**state.metrics, **s.metrics}
      return state.replace(
        pipeline_state=s, obs=s.obs, reward=s.reward, done=s.done, metrics=metrics
      )

  return BuiltinEnv()


def train_brax(cfg: PPOConfig, seeds: list[int]) -> Curves:
  """Brax's `ppo.train` on `cfg.env`, each seed in turn."""
  from brax.training.agents.ppo import train as brax_train

  env = envs.make(cfg.env, episode_length=cfg.episode_length, backend=cfg.env_backend)
  environment, wrap_env_fn = brax_environment(env)
  arguments = brax_arguments(cfg)
  steps, returns, wall = None, [], 0.0
  for seed in seeds:
    curve = []
    started = time.perf_counter()
    with replicated_put():
      brax_train.train(
        environment=environment,
        wrap_env_fn=wrap_env_fn,
        seed=seed,
        progress_fn=lambda step, metrics, c=curve: c.append(
          (step, float(metrics["eval/episode_reward"]))
        ),
        **arguments,
      )
    wall += time.perf_counter() - started
    steps = np.array([s for s, _ in curve], np.int64)
    returns.append([r for _, r in curve])
  return Curves(steps=steps, returns=np.array(returns), wall_seconds=wall)


def brax_record(cfg: PPOConfig, seeds: list[int], curves: Curves) -> str:
  """brax.json: Brax's curves, with what Brax was given and the seeds."""
  record = {k: np.asarray(v).tolist() for k, v in vars(curves).items()}
  return json.dumps({**record, "brax_settings": brax_settings(cfg), "seeds": seeds})


def load_brax(cfg: PPOConfig, seeds: list[int], path: Path) -> Curves:
  """Brax's curves from an earlier comparison's brax.json.

  Raises:
    ValueError: there is no such file, or Brax was given other settings or seeds there.
  """
  if not path.is_file():
    raise ValueError(f"--brax_from: no {path}")
  record = json.loads(path.read_text())
  made, wanted = record.get("brax_settings", {}), brax_settings(cfg)
  differ = sorted(k for k in wanted.keys() | made.keys() if made.get(k) != wanted.get(k))
  if differ or record.get("seeds") != seeds:
    what = ", ".join(f"{k} ({made.get(k)!r}, here {wanted.get(k)!r})" for k in differ)
    what = what or f"seeds ({record.get('seeds')}, here {seeds})"
    raise ValueError(f"--brax_from: Brax's curves in {path} come from other settings: {what}")
  return Curves(
    steps=np.array(record["steps"], np.int64),
    returns=np.array(record["returns"]),
    wall_seconds=float(record["wall_seconds"]),
  )


def train_ours(cfg: PPOConfig, seeds: list[int], run_dir: Path) -> Curves:
  """Our `train` on `cfg.env`, the seeds as one panel."""
  panel = dataclasses.replace(cfg, seed=seeds[0], num_seeds=len(seeds))
  started = time.perf_counter()
  result = train(panel, run_dir, show_progress=False)
  wall = time.perf_counter() - started
  returns = np.reshape(result.evals["eval/episode_return"], (len(seeds), -1))
  steps = np.reshape(result.evals["env_steps"], (len(seeds), -1))[0].astype(np.int64)
  return Curves(steps=steps, returns=returns, wall_seconds=wall)


def curve_rows(curves: dict[str, Curves]) -> dict[str, Row]:
  """Trainer -> the return at each evaluation both made, the wall time and the SPS."""
  matched = sorted(set.intersection(*(set(c.steps.tolist()) for c in curves.values())))
  rows = {}
  for trainer, c in curves.items():
    at = {step: i for i, step in enumerate(c.steps.tolist())}
    row = {f"return_at_{s}": mean_and_interval(c.returns[:, at[s]]) for s in matched}
    row["wall_seconds"] = (c.wall_seconds, float("nan"))
    row["sps"] = (c.returns.shape[0] * float(c.steps[-1]) / c.wall_seconds, float("nan"))
    rows[trainer] = row
  return rows


def summary_row(rows: dict[str, Row]) -> Row:
  """One env's line of the summary: per trainer, the return at the last matched evaluation,
  the wall time and the SPS."""
  final = [name for name in rows["ours"] if name.startswith("return_at_")][-1]
  summary = {"env_steps": (int(final.removeprefix("return_at_")), float("nan"))}
  for column, name in ((final, "final_return"), ("wall_seconds", "wall_seconds"), ("sps", "sps")):
    summary |= {f"{trainer}_{name}": row[column] for trainer, row in rows.items()}
  return summary


def plot(curves: dict[str, dict[str, Curves]], out: Path) -> Path:
  from matplotlib.figure import Figure

  fig = Figure(figsize=(5 * len(curves), 4), layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(curves)))
  for ax, (env, by_trainer) in zip(axes, curves.items(), strict=True):
    for trainer, c in by_trainer.items():
      plot_band(ax, c.steps, c.returns, "Brax ppo.train" if trainer == "brax" else "ppo_jax")
    ax.set_title(env)
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    ax.legend()
  path = out / "comparison.png"
  fig.savefig(path, dpi=100)
  return path


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description="Brax's ppo.train against ours: same envs, settings and seeds.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    allow_abbrev=False,
  )
  parser.add_argument("envs", nargs="+", metavar="ENV", help="env names (see the module doc)")
  parser.add_argument("--seeds", type=int, default=3, help="seeds per trainer (seed, seed + 1 ...)")
  parser.add_argument("--out", type=Path, default=None, help="output folder (must not exist)")
  parser.add_argument(
    "--brax_from",
    type=Path,
    default=None,
    help="an earlier comparison's output folder: Brax's curves are read from its brax.json "
    "files (made with the same settings and seeds) instead of training Brax again",
  )
  # The envs are the positional ENVs, the panel's size is --seeds.
  add_config_options(parser, "the env's settings if omitted", exclude=("env", "num_seeds"))
  return parser


def main(argv: list[str] | None = None) -> Path:
  parser = build_parser()
  args = parse_args(parser, argv)
  names, seeds, out = args.pop("envs"), args.pop("seeds"), args.pop("out")
  brax_from = args.pop("brax_from")
  if seeds < 1:
    parser.error(f"--seeds ({seeds}) must be >= 1")
  configs, reused = {}, {}
  try:  # every config (and every reused Brax curve) is checked before anything trains
    for name in names:
      cfg = dataclasses.replace(base_config(resolve_env(name)), **args)
      brax_arguments(cfg)
      configs[cfg.env] = cfg
      if brax_from is not None:
        seed_list = [cfg.seed + i for i in range(seeds)]
        path = brax_from / cfg.env.replace("/", "_") / "brax.json"
        reused[cfg.env] = load_brax(cfg, seed_list, path)
  except (ValueError, TypeError) as error:
    parser.error(str(error))
  out = out or logger.new_directory(Path("runs"), "versus_brax-")
  if out.exists() and any(out.iterdir()):
    parser.error(f"{out} is not empty; a comparison is never overwritten")
  out.mkdir(parents=True, exist_ok=True)

  curves, summary = {}, {}
  for env, cfg in configs.items():
    folder = out / env.replace("/", "_")
    folder.mkdir()
    seed_list = [cfg.seed + i for i in range(seeds)]
    brax_source = "Brax's curves from --brax_from" if env in reused else "Brax"
    steps = f"{seeds} seeds x {cfg.total_env_steps:,d} steps"
    print(f"{env}: {steps}, {brax_source} then ours", flush=True)
    by_trainer = {"brax": reused[env] if env in reused else train_brax(cfg, seed_list)}
    (folder / "brax.json").write_text(brax_record(cfg, seed_list, by_trainer["brax"]))
    by_trainer["ours"] = train_ours(cfg, seed_list, folder / "ours")
    rows = curve_rows(by_trainer)
    write_tables(rows, folder, label="trainer")
    curves[env], summary[env] = by_trainer, summary_row(rows)
    print(f"{env}:\n{(folder / 'table.md').read_text()}", flush=True)
  write_tables(summary, out, label="env")
  figure = plot(curves, out)
  print((out / "table.md").read_text())
  print(f"wrote {out / 'table.md'}, {out / 'table.csv'} and {figure}")
  return out


if __name__ == "__main__":
  main()

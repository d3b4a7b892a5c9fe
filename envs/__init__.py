"""Environments behind one name: `envs.make("brax/ant")`, `envs.make("playground/CartpoleBalance")`,
`envs.make("builtin/cartpole_balance")`, or one's own after `envs.register("mylab/hopper", factory)`.

Every environment comes back as an `envs.Environment`: one unbatched `reset(key)` and
`step(state, action)` with time limit, action repeat and auto-reset inside, terminations
and truncations kept apart, and the final observation before a reset kept for bootstrapping.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from collections.abc import Callable

from envs.base import CoreEnv, Environment, EnvState
from envs.builtin import TASKS
from envs.randomization import RANDOMIZATIONS, RandomizationFn

__all__ = [
  "BACKENDS",
  "RANDOMIZATIONS",
  "SOURCES",
  "CoreEnv",
  "Environment",
  "EnvState",
  "available",
  "check_name",
  "check_playground_assets",
  "did_you_mean",
  "make",
  "playground_backend",
  "register",
  "registered",
]

# Per source, the physics pipelines (Brax) or implementations (Playground) it accepts.
BACKENDS = {
  "brax": ("generalized", "positional", "spring", "mjx"),
  "playground": ("jax", "warp"),
  "builtin": (),
}
SOURCES = tuple(BACKENDS)
# The default time limit of a registered env that names none (Brax's and Playground's).
DEFAULT_EPISODE_LENGTH = 1000


@dataclasses.dataclass(frozen=True)
class Registration:
  """One's own environment: `factory(**kwargs)` returns its core env (see `register`)."""

  factory: Callable[..., CoreEnv]
  backends: tuple[str, ...] = ()


_REGISTERED: dict[str, Registration] = {}


def register(
  name: str, factory: Callable[..., CoreEnv], *, backends: tuple[str, ...] = ()
) -> Callable[..., CoreEnv]:
  """Makes `factory` the environment `PPOConfig(env=name)` and `make(name)` build; returns it.

  Args:
    name: "<source>/<task>" with a source of one's own choosing (e.g. "mylab/hopper"); the
      sources "builtin", "brax" and "playground" keep their own registries (Brax's
      `brax.envs.register_environment` and Playground's suites' `register_environment` add
      to those, and `make` finds what they add).
    factory: `factory(**kwargs) -> core env`: a Brax env, a Playground `MjxEnv`, or any
      object with `CoreEnv`'s protocol (`reset(key)` and `step(state, action)` returning
      states with `obs`, `reward`, `done`, `metrics` and `.replace`). Its time limit is the
      core env's `default_episode_length` if it has one, else its Playground-style
      `_config.episode_length`, else 1000; `solved_threshold`, if it has one, marks it solved.
    backends: the `PPOConfig.env_backend` values it accepts, passed on as `backend=`; none by
      default.

  Raises:
    ValueError: a name that is not "<source>/<task>" or whose source is a built-in one.
  """
  source, _, task = name.partition("/")
  if not source or not task or not callable(factory):
    raise ValueError(
      f"register({name!r}, ...): the name must be '<source>/<task>' and the factory callable"
    )
  if source in SOURCES:
    raise ValueError(
      f"register({name!r}, ...): the source {source!r} is built in; choose a source of your "
      "own (e.g. 'mylab/...'), or use brax.envs.register_environment or a Playground suite's "
      "register_environment for brax/ and playground/ names"
    )
  _REGISTERED[name] = Registration(factory, tuple(backends))
  return factory


def registered() -> dict[str, Registration]:
  """The envs `register` added in this process, by name."""
  return dict(_REGISTERED)


def _brax_names() -> tuple[str, ...]:
  """Read anew each time, so that envs registered with Brax after this import are found."""
  from brax import envs as brax_envs

  return tuple(sorted(brax_envs._envs))  # Brax keeps its registry in this dict.


def _playground_suites() -> tuple:
  from mujoco_playground import dm_control_suite, locomotion, manipulation

  return dm_control_suite, locomotion, manipulation


def _playground_suite(env_name: str):
  """The Playground suite module that has `env_name` (its `register_environment` included)."""
  for suite in _playground_suites():
    if env_name in suite._envs:  # each suite keeps its registry in this dict
      return suite
  raise KeyError(env_name)


def _playground_names() -> tuple[str, ...]:
  """Every suite's names, read anew: `registry.ALL_ENVS` is fixed when Playground is imported."""
  return tuple(name for suite in _playground_suites() for name in suite._envs)


MENAGERIE_URL = "https://github.com/google-deepmind/mujoco_menagerie"


def check_playground_assets(env_name: str) -> None:
  """Raises ValueError when a Playground env needs MuJoCo Menagerie and it is not on disk.

  The DM Control Suite ships its models; the locomotion and manipulation suites load their
  robots from Menagerie, which Playground clones from GitHub at first use. This project never
  downloads at run time: the check comes first, and the message says where Playground looks
  (mujoco_playground/../external_deps/mujoco_menagerie) and how to put Menagerie there.
  """
  from mujoco_playground import dm_control_suite
  from mujoco_playground._src import mjx_env

  if env_name in dm_control_suite._envs or mjx_env.MENAGERIE_PATH.exists():
    return
  path, commit = mjx_env.MENAGERIE_PATH, mjx_env.MENAGERIE_COMMIT_SHA
  raise ValueError(
    f"playground/{env_name} needs MuJoCo Menagerie's robots in {path}, which does not exist, "
    f"and this project never downloads at run time. Provide it: git clone {MENAGERIE_URL} "
    f"{path} && git -C {path} checkout {commit} (or symlink an existing copy to {path})"
  )


def playground_backend(requested: str | None) -> str:
  """The implementation a Playground env runs on: `requested`, else MuJoCo Warp ("warp") where
  JAX runs on a GPU and `mujoco_warp` is importable (Playground 0.2's own default), else "jax".

  Raises:
    ValueError: "warp" asked for where it cannot run (no GPU, or no mujoco_warp).
  """
  import jax

  gpu = jax.default_backend() == "gpu"
  warp = gpu and importlib.util.find_spec("mujoco_warp") is not None
  if requested == "warp" and not warp:
    where = "mujoco_warp is not installed" if gpu else f"JAX runs on {jax.default_backend()!r}"
    raise ValueError(
      f"env_backend ('warp') must run on an NVIDIA GPU with mujoco_warp installed, and here "
      f"{where}; use env_backend='jax' (or None, which picks 'warp' only where it can run)"
    )
  return requested or ("warp" if warp else "jax")


def available() -> list[str]:
  """All names `make` accepts."""
  return (
    [f"builtin/{n}" for n in sorted(TASKS)]
    + [f"brax/{n}" for n in _brax_names()]
    + [f"playground/{n}" for n in _playground_names()]
    + sorted(_REGISTERED)
  )


def did_you_mean(word: str, candidates: list[str]) -> str | None:
  """The candidate closest to `word` (ignoring case), or None when none is close."""
  by_lower = {c.lower(): c for c in candidates}
  match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
  return by_lower[match[0]] if match else None


def _suggestion(word: str, candidates: list[str], prefix: str = "") -> str:
  match = did_you_mean(word, candidates)
  return f"did you mean {prefix + match!r}? " if match else ""


def check_name(name: str) -> None:
  """Raises ValueError unless `make` knows `name`.

  The message suggests the closest known name and lists what the source has (every name, for
  an unknown source). Brax and Playground are imported to read their registries.
  """
  source, _, env_name = name.partition("/")
  if name in _REGISTERED:
    return
  own = sorted(n for n in _REGISTERED if n.partition("/")[0] == source)
  if not source or not env_name:
    names = available()
    raise ValueError(
      f"env {name!r} must be '<source>/<name>' with source one of {SOURCES} or one's own "
      f"(envs.register); {_suggestion(name, names)}available: {', '.join(names)}"
    )
  if source not in SOURCES and not own:
    names = available()
    raise ValueError(
      f"env {name!r} is neither built in (a source of {SOURCES}) nor registered in this "
      f"process; {_suggestion(name, names)}one's own env is registered with "
      f"envs.register({name!r}, factory) before training, evaluating or resuming (from the "
      f"command line: --import MODULE, the module that registers it); available: "
      f"{', '.join(names)}"
    )
  if source not in SOURCES:
    raise ValueError(
      f"unknown env {name!r}; {_suggestion(env_name, own, '')}{source}/ envs registered in "
      f"this process: {', '.join(own)}"
    )
  registry, what = {
    "builtin": (lambda: sorted(TASKS), "built-in tasks"),
    "brax": (_brax_names, "Brax envs"),
    "playground": (
      _playground_names,
      "Playground envs (all but the DM Control Suite need MuJoCo Menagerie on disk)",
    ),
  }[source]
  names = list(registry())
  if env_name not in names:
    raise ValueError(
      f"unknown env {name!r}; {_suggestion(env_name, names, f'{source}/')}"
      f"{what}: {', '.join(names)}"
    )


def make(
  name: str,
  *,
  episode_length: int | None = None,
  action_repeat: int = 1,
  backend: str | None = None,
  randomization_fn: RandomizationFn | None = None,
  **kwargs,
) -> Environment:
  """Makes an environment by name.

  Args:
    name: "<source>/<env>", source one of "builtin", "brax", "playground", or a name given
      to `register`.
    episode_length: time limit in simulator steps; the source's default when None
      (1000 for Brax and Playground, the task's own for built-ins).
    action_repeat: times each action is applied.
    backend: Brax physics pipeline ("mjx", "generalized", "positional", "spring") or the
      Playground implementation ("jax", "warp"); when None, "generalized" for Brax and, for
      Playground, "warp" on a GPU with mujoco_warp, else "jax" (`playground_backend`); of a
      registered env, one of the backends it was registered with. The environment made
      keeps the one chosen (`Environment.backend`).
    randomization_fn: domain randomization with Brax's and Playground's signature,
      `(sys, rng) -> (randomized_sys, in_axes)` (`envs.randomization`), or None.
    **kwargs: passed to the source's constructor (Brax env kwargs, Playground config overrides).

  Raises:
    ValueError: unknown source or name (the message lists what is available), a backend
      given for a source that has none, "warp" where it cannot run, or a Playground robot
      whose MuJoCo Menagerie assets are not on disk (the message names the directory and how
      to provide it).
  """
  check_name(name)
  source, _, env_name = name.partition("/")
  if source == "builtin":
    if backend is not None:
      raise ValueError(f"backend ({backend!r}) applies to brax/ and playground/ envs only")
    core = TASKS[env_name](**kwargs)
    length, solved = core.default_episode_length, core.solved_threshold
  elif name in _REGISTERED:
    registration = _REGISTERED[name]
    if backend is not None and backend not in registration.backends:
      raise ValueError(
        f"backend ({backend!r}) must be one of {registration.backends} for {name}, as registered"
      )
    core = registration.factory(**kwargs, **({} if backend is None else {"backend": backend}))
    length = getattr(core, "default_episode_length", None)
    if length is None:
      length = getattr(getattr(core, "_config", None), "episode_length", DEFAULT_EPISODE_LENGTH)
    length, solved = int(length), getattr(core, "solved_threshold", None)
  elif source == "brax":
    from brax import envs as brax_envs

    backend = backend or "generalized"
    core = brax_envs.get_environment(env_name, backend=backend, **kwargs)
    length, solved = 1000, None
  else:
    check_playground_assets(env_name)
    suite = _playground_suite(env_name)
    backend = playground_backend(backend)
    overrides = {"impl": backend, **kwargs}
    core = suite.load(env_name, config_overrides=overrides)
    length, solved = int(suite.get_default_config(env_name).episode_length), None
  return Environment(
    core=core,
    name=name,
    episode_length=length if episode_length is None else episode_length,
    action_repeat=action_repeat,
    solved_threshold=solved,
    randomization_fn=randomization_fn,
    backend=backend,
  )

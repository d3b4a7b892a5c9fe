"""PPOConfig: every hyperparameter of a run, checked before anything compiles.

Fields that Brax's `ppo.train` also has keep Brax's name and meaning, so a Brax or MuJoCo
Playground config ports by copying its keyword arguments. In particular one training
iteration collects `batch_size * num_minibatches` trajectory segments of `unroll_length`
steps (`batch_size * num_minibatches / num_envs` segments per env, one after the other),
then makes `num_updates_per_batch` epochs of `num_minibatches` minibatch updates.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from envs import BACKENDS, SOURCES

ALGORITHMS = ("ppo", "trpo")
SCHEDULES = ("constant", "linear", "adaptive_kl")
ACTIVATIONS = ("swish", "tanh", "relu", "elu", "gelu")  # functions of flax.linen, by name
ACTION_STD_TYPES = ("parameter", "network")


def _field(default: Any, help: str) -> Any:
  """A config field with its default and its meaning (the CLI's --help shows it)."""
  return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Hyperparameters of one PPO run. Defaults train brax inverted_pendulum with Brax's settings.

  Every field carries its meaning as `help` metadata: `PPOConfig.field_help()`, the CLI's
  --help and the README read it from there.
  """

  algorithm: str = _field(
    "ppo",
    "'ppo' (the clipped surrogate, minibatch epochs) or 'trpo' (one natural-gradient step per "
    "iteration under a hard KL bound, see the trpo_* fields); the value network trains by "
    "minibatch epochs either way.",
  )
  env: str = _field(
    "brax/inverted_pendulum", "environment name, '<source>/<name>' (see `envs.available()`)."
  )
  env_backend: str | None = _field(
    None, "Brax physics pipeline or Playground implementation; None for the default."
  )
  num_timesteps: int = _field(
    2_000_000, "environment steps to train for (rounded up to whole chunks of iterations)."
  )
  num_envs: int = _field(1024, "environments stepped in parallel.")
  episode_length: int = _field(
    1000, "time limit in simulator steps (counts action repeats, as in Brax)."
  )
  action_repeat: int = _field(1, "times each action is applied.")
  unroll_length: int = _field(
    5, "steps per trajectory segment; GAE bootstraps at each segment's end."
  )
  batch_size: int = _field(1024, "trajectory segments per minibatch.")
  num_minibatches: int = _field(32, "minibatches per epoch.")
  num_updates_per_batch: int = _field(4, "epochs over each iteration's data.")
  learning_rate: float = _field(
    3e-4, "Adam step size (the initial one for 'linear' and 'adaptive_kl')."
  )
  learning_rate_schedule: str = _field(
    "constant",
    "'constant', 'linear' (to zero at the end of training) or 'adaptive_kl' (rsl_rl's rule, "
    "see `desired_kl`).",
  )
  desired_kl: float = _field(
    0.01,
    "KL the 'adaptive_kl' schedule steers to: after each minibatch the rate is divided by 1.5 "
    "when the exact KL > 2 * desired_kl and multiplied by 1.5 when it is < desired_kl / 2, "
    "clamped to [min_learning_rate, max_learning_rate].",
  )
  min_learning_rate: float = _field(1e-5, "lower clamp of the adaptive rate.")
  max_learning_rate: float = _field(1e-2, "upper clamp of the adaptive rate.")
  target_kl: float | None = _field(
    None,
    "early stop; None disables it. When a minibatch's approx KL (k3, measured before its "
    "update) exceeds `target_kl_factor * target_kl`, that update and every remaining "
    "minibatch update of the iteration are skipped.",
  )
  target_kl_factor: float = _field(
    1.5, "the tolerance factor of the early stop (1.5, as in Stable-Baselines3)."
  )
  entropy_cost: float = _field(1e-2, "weight of the entropy bonus.")
  discounting: float = _field(0.97, "discount factor gamma, in (0, 1].")
  gae_lambda: float = _field(0.95, "GAE lambda, in [0, 1].")
  clipping_epsilon: float = _field(0.3, "PPO ratio clip epsilon.")
  clipping_epsilon_value: float | None = _field(
    None, "clip of the value update around the rollout's values; None disables value clipping."
  )
  value_loss_coef: float = _field(0.5, "weight of the value loss 0.5 * (V - target)^2.")
  normalize_advantage: bool = _field(True, "standardize advantages per minibatch.")
  reward_scaling: float = _field(10.0, "rewards are multiplied by this before GAE.")
  normalize_observations: bool = _field(
    True, "running mean/std normalization of observations (Welford)."
  )
  max_grad_norm: float | None = _field(None, "global-norm gradient clip; None disables it.")
  policy_hidden_layer_sizes: tuple[int, ...] = _field(
    (32, 32, 32, 32), "hidden layers of the policy MLP."
  )
  value_hidden_layer_sizes: tuple[int, ...] = _field(
    (256, 256, 256, 256, 256), "hidden layers of the value MLP."
  )
  activation: str = _field("swish", "hidden activation of both MLPs.")
  action_std_type: str = _field(
    "network",
    "'parameter' (a state-independent learned log-std) or 'network' (a second head of the "
    "policy MLP).",
  )
  init_action_std: float = _field(0.7, "initial action standard deviation.")
  min_action_std: float = _field(
    1e-3, "floor added to the action std (keeps the policy stochastic)."
  )
  num_evals: int = _field(
    20,
    "evaluations over training (one at the start, as in Brax); training runs in `num_evals - "
    "1` chunks of iterations, one host call each.",
  )
  num_eval_envs: int = _field(128, "environments per evaluation; each runs one full episode.")
  deterministic_eval: bool = _field(True, "evaluate the mean action instead of sampling.")
  trpo_max_kl: float = _field(
    0.01, "TRPO's bound delta on the mean exact KL(old || new) of each policy step."
  )
  trpo_cg_iterations: int = _field(
    10, "conjugate-gradient iterations for the natural-gradient direction."
  )
  trpo_cg_damping: float = _field(0.1, "damping added to the Fisher matrix (F + damping * I).")
  trpo_max_backtracks: int = _field(10, "line-search candidates tried before the step is rejected.")
  trpo_backtrack_coef: float = _field(
    0.8, "each candidate step is this fraction of the previous one."
  )
  num_seeds: int = _field(
    1,
    "independent seeds trained together (seeds seed, seed + 1, ...), `jax.vmap`ped over the "
    "whole training step; metrics get a leading seed axis.",
  )
  monitor_window: int = _field(
    10,
    "iterations of history the failure labels compare against (the median update KL of "
    "`kl_spike`, the median rollout return of `return_drop`).",
  )
  kl_spike_factor: float = _field(
    5.0,
    "`kl_spike` fires when an update's KL (approx, k3, between the rollout policy and the "
    "updated one, over the whole batch) exceeds this factor times the reference: `target_kl` "
    "if set, else `desired_kl` under 'adaptive_kl', else the median update KL of the last "
    "`monitor_window` iterations (once half of them are in).",
  )
  kl_spike_max: float = _field(
    0.1, "`kl_spike` also fires when an update's KL exceeds this, whatever the reference."
  )
  kl_spike_min: float = _field(
    1e-3, "an update KL at or below this is never a spike (tiny KLs are noise)."
  )
  clip_saturated_fraction: float = _field(
    0.25,
    "`clip_saturated` fires when more than this fraction of the batch's ratios lie outside "
    "the clip band after the update.",
  )
  clip_idle_fraction: float = _field(
    1e-3, "an update is idle when at most this fraction of ratios are clipped."
  )
  clip_idle_iterations: int = _field(
    10, "`clip_idle` fires from this many idle updates in a row on."
  )
  entropy_collapse_std: float = _field(
    0.02, "`entropy_collapse` fires when the mean action std falls below this."
  )
  entropy_collapse_drop: float = _field(
    0.3,
    "`entropy_collapse` also fires when the mean action std loses more than this fraction of "
    "itself in one iteration.",
  )
  return_drop_fraction: float = _field(
    0.5,
    "`return_drop` fires when the rollout return falls below the median of the last "
    "`monitor_window` ones by more than this fraction of that median's magnitude.",
  )
  max_nonfinite_iterations: int = _field(
    3,
    "training stops with an error after this many `nonfinite` iterations in a row (NaN or Inf "
    "in the rollout, loss, gradients or parameters: such an update is skipped on the device "
    "and the state stays as it was before it).",
  )
  checkpoint_interval: int = _field(
    1,
    "iterations between checkpoints of a run directory (taken at the first chunk end past the "
    "interval, and always at the end).",
  )
  keep_checkpoints: int = _field(3, "how many of the latest checkpoints a run directory keeps.")
  seed: int = _field(0, "PRNG seed.")

  def __post_init__(self):
    for name in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
      value = getattr(self, name)
      if isinstance(value, list):  # a list from JSON or a CLI: store the hashable form
        object.__setattr__(self, name, tuple(value))
    _check_types(self)
    _check_values(self)

  # Derived sizes.
  @property
  def num_segments(self) -> int:
    """Trajectory segments of `unroll_length` collected per iteration."""
    return self.batch_size * self.num_minibatches

  @property
  def unrolls_per_iteration(self) -> int:
    """Sequential unrolls of all `num_envs` environments per iteration."""
    return self.num_segments // self.num_envs

  @property
  def minibatch_size(self) -> int:
    """Samples (single transitions) per minibatch update."""
    return self.batch_size * self.unroll_length

  @property
  def env_steps_per_iteration(self) -> int:
    """Simulator steps per iteration (counting action repeats, as Brax does)."""
    return self.num_segments * self.unroll_length * self.action_repeat

  @property
  def num_chunks(self) -> int:
    """Host calls of the compiled training loop; an evaluation follows each."""
    return max(self.num_evals - 1, 1)

  @property
  def iterations_per_chunk(self) -> int:
    needed = math.ceil(self.num_timesteps / self.env_steps_per_iteration)
    return max(1, math.ceil(needed / self.num_chunks))

  @property
  def num_iterations(self) -> int:
    return self.iterations_per_chunk * self.num_chunks

  @property
  def total_env_steps(self) -> int:
    """Environment steps the run will actually take (num_timesteps rounded up)."""
    return self.num_iterations * self.env_steps_per_iteration

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def field_help(cls) -> dict[str, str]:
    """Field name -> its meaning."""
    return {field.name: field.metadata["help"] for field in dataclasses.fields(cls)}


# Field -> (accepted kinds, description for the error message).
_INT = ((numbers.Integral,), "an int")
_FLOAT = ((numbers.Real,), "a number")
_BOOL = ((bool,), "a bool")
_STR = ((str,), "a string")


def _field_kind(field: dataclasses.Field):
  kinds = {
    "int": _INT,
    "float": _FLOAT,
    "bool": _BOOL,
    "str": _STR,
    "str | None": _STR,
    "float | None": _FLOAT,
    "tuple[int, ...]": ((tuple,), "a tuple of ints"),
  }
  return kinds[field.type], field.type.endswith("| None")


def _check_types(cfg: PPOConfig) -> None:
  for field in dataclasses.fields(cfg):
    value = getattr(cfg, field.name)
    (kinds, description), optional = _field_kind(field)
    if value is None and optional:
      continue
    is_bool = isinstance(value, bool)
    ok = isinstance(value, kinds) and (is_bool == (kinds == (bool,)))
    if ok and isinstance(value, tuple):
      ok = all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and _is_finite(v) for v in value
      )
    if ok and isinstance(value, numbers.Real) and not _is_finite(value):
      ok = False
    if not ok:
      none = " or None" if optional else ""
      raise ValueError(
        f"{field.name} must be {description}{none} (finite), got {value!r} "
        f"of type {type(value).__name__}"
      )


def _is_finite(value: numbers.Real) -> bool:
  """True for a number that is a finite float (math.isfinite overflows on ints past 1e308)."""
  try:
    return math.isfinite(value)
  except OverflowError:
    return False


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def _check_values(c: PPOConfig) -> None:
  source, _, name = c.env.partition("/")
  _require(
    source in SOURCES and bool(name),
    f"env ({c.env!r}) must be '<source>/<name>' with source one of {SOURCES}",
  )
  if c.env_backend is not None:
    _require(
      c.env_backend in BACKENDS.get(source, ()),
      f"env_backend ({c.env_backend!r}) must be None or one of "
      f"{BACKENDS.get(source, ())} for {source}/ envs",
    )
  for field in (
    "num_timesteps",
    "num_envs",
    "episode_length",
    "action_repeat",
    "unroll_length",
    "batch_size",
    "num_minibatches",
    "num_updates_per_batch",
    "num_evals",
    "num_eval_envs",
    "checkpoint_interval",
    "keep_checkpoints",
    "clip_idle_iterations",
    "max_nonfinite_iterations",
    "trpo_cg_iterations",
    "trpo_max_backtracks",
    "num_seeds",
  ):
    value = getattr(c, field)
    _require(value >= 1, f"{field} ({value}) must be >= 1")
  _require(
    2 <= c.monitor_window <= 10_000,
    f"monitor_window ({c.monitor_window}) must be in [2, 10000]: the device keeps that history",
  )
  # Counted on the device in int32.
  for field in (
    "clip_idle_iterations",
    "max_nonfinite_iterations",
    "trpo_cg_iterations",
    "trpo_max_backtracks",
  ):
    value = getattr(c, field)
    _require(value < 2**31, f"{field} ({value}) must be < 2**31 (an int32 counter)")
  _require(c.kl_spike_factor > 1, f"kl_spike_factor ({c.kl_spike_factor}) must be > 1")
  _require(
    c.kl_spike_min < c.kl_spike_max,
    f"kl_spike_min ({c.kl_spike_min}) must be < kl_spike_max ({c.kl_spike_max})",
  )
  for field in (
    "clip_saturated_fraction",
    "clip_idle_fraction",
    "entropy_collapse_drop",
    "return_drop_fraction",
    "trpo_backtrack_coef",
  ):
    value = getattr(c, field)
    _require(0 < value < 1, f"{field} ({value}) must be in (0, 1)")
  _require(
    c.seed + c.num_seeds <= 2**32,
    f"seed + num_seeds - 1 ({c.seed} + {c.num_seeds} - 1) must be < 2**32: the panel's seeds",
  )
  _require(
    0 <= c.seed < 2**32,
    f"seed ({c.seed}) must be in [0, 2**32): jax.random.PRNGKey keeps only its low 32 bits",
  )
  _require(
    c.num_segments % c.num_envs == 0,
    f"batch_size * num_minibatches ({c.batch_size} * {c.num_minibatches} = {c.num_segments}) "
    f"must be divisible by num_envs ({c.num_envs}): each iteration runs whole unrolls of all envs",
  )
  _require(
    c.episode_length % c.action_repeat == 0,
    f"episode_length ({c.episode_length}) must be divisible by action_repeat ({c.action_repeat})",
  )
  # Steps and iterations are counted on the device in int32.
  _require(c.episode_length < 2**31, f"episode_length ({c.episode_length}) must be < 2**31")
  _require(
    c.num_iterations < 2**31,
    f"num_timesteps ({c.num_timesteps}) and num_evals ({c.num_evals}) give {c.num_iterations} "
    f"iterations of {c.env_steps_per_iteration} env steps; the iteration count must be < 2**31",
  )
  for field in (
    "learning_rate",
    "clipping_epsilon",
    "desired_kl",
    "min_learning_rate",
    "max_learning_rate",
    "reward_scaling",
    "init_action_std",
    "target_kl_factor",
    "kl_spike_max",
    "kl_spike_min",
    "trpo_max_kl",
    "entropy_collapse_std",
  ):
    value = getattr(c, field)
    _require(value > 0, f"{field} ({value}) must be > 0")
  for field in ("target_kl", "clipping_epsilon_value", "max_grad_norm"):
    value = getattr(c, field)
    _require(value is None or value > 0, f"{field} ({value}) must be > 0 or None")
  for field in ("entropy_cost", "value_loss_coef", "min_action_std", "trpo_cg_damping"):
    value = getattr(c, field)
    _require(value >= 0, f"{field} ({value}) must be >= 0")
  _require(0 < c.discounting <= 1, f"discounting ({c.discounting}) must be in (0, 1]")
  _require(0 <= c.gae_lambda <= 1, f"gae_lambda ({c.gae_lambda}) must be in [0, 1]")
  _require(
    c.min_learning_rate <= c.learning_rate <= c.max_learning_rate
    or c.learning_rate_schedule != "adaptive_kl",
    f"learning_rate ({c.learning_rate}) must lie in [min_learning_rate, max_learning_rate] "
    f"([{c.min_learning_rate}, {c.max_learning_rate}]) with learning_rate_schedule='adaptive_kl'",
  )
  if c.algorithm == "trpo":
    _require(
      c.target_kl is None,
      f"target_kl ({c.target_kl}) must be None with algorithm='trpo': TRPO bounds each step's "
      "KL by trpo_max_kl instead of stopping epochs early",
    )
    _require(
      c.learning_rate_schedule != "adaptive_kl",
      "learning_rate_schedule ('adaptive_kl') steers the policy's KL through the learning rate; "
      "with algorithm='trpo' the learning rate moves only the value network",
    )
  for field, allowed in (
    ("algorithm", ALGORITHMS),
    ("learning_rate_schedule", SCHEDULES),
    ("activation", ACTIVATIONS),
    ("action_std_type", ACTION_STD_TYPES),
  ):
    value = getattr(c, field)
    _require(value in allowed, f"{field} ({value!r}) must be one of {allowed}")
  for field in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
    value = getattr(c, field)
    _require(
      len(value) >= 1 and all(v >= 1 for v in value),
      f"{field} ({value}) must be a non-empty tuple of positive ints",
    )

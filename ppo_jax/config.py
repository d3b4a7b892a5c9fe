"""PPOConfig: every hyperparameter of a run, checked before anything compiles.

Fields that Brax's `ppo.train` also has keep Brax's name and meaning, so a Brax or MuJoCo
Playground config ports by copying its keyword arguments. In particular one training
iteration collects `batch_size * num_minibatches` trajectory segments of `unroll_length`
steps (`batch_size * num_minibatches / num_envs` segments per env, one after the other),
then makes `num_updates_per_batch` epochs of `num_minibatches` minibatch updates.

Each field carries its meaning and its rule (`_field`); `__post_init__` checks every field's
type and rule, then the rules that tie fields together, and raises a ValueError that names
the field, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

from envs import BACKENDS, SOURCES

ALGORITHMS = ("ppo", "trpo")
SCHEDULES = ("constant", "linear", "adaptive_kl")
ACTIVATIONS = ("swish", "tanh", "relu", "elu", "gelu")  # functions of flax.linen, by name
ACTION_STD_TYPES = ("parameter", "network")
DISTRIBUTION_TYPES = ("normal", "tanh_normal")


@dataclasses.dataclass(frozen=True)
class Rule:
  """What a field's value must satisfy; `text` completes "<field> (<value>) must be ..."."""

  ok: Callable[[Any], bool]
  text: str


def one_of(choices: tuple[str, ...]) -> Rule:
  return Rule(lambda v: v in choices, f"one of {choices}")


COUNT = Rule(lambda v: v >= 1, ">= 1")
# Counted on the device in int32.
COUNTER = Rule(lambda v: 1 <= v < 2**31, "in [1, 2**31): the device counts it in int32")
POSITIVE = Rule(lambda v: v > 0, "> 0")
NON_NEGATIVE = Rule(lambda v: v >= 0, ">= 0")
FRACTION = Rule(lambda v: 0 < v < 1, "in (0, 1)")
LAYER_SIZES = Rule(
  lambda v: len(v) >= 1 and all(n >= 1 for n in v), "a non-empty tuple of positive ints"
)
ENV_NAME = Rule(
  lambda v: v.partition("/")[0] in SOURCES and bool(v.partition("/")[2]),
  f"'<source>/<name>' with source one of {SOURCES}",
)


def _field(default: Any, help: str, rule: Rule | None = None) -> Any:
  """A config field: its default, its meaning (the CLI's --help shows it) and its rule."""
  return dataclasses.field(default=default, metadata={"help": help, "rule": rule})


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Hyperparameters of one PPO run. Defaults train brax inverted_pendulum with Brax's settings.

  Every field carries its meaning as `help` metadata: `PPOConfig.field_help()`, the CLI's
  --help and the README read it from there.
  """

  algorithm: str = _field(
    "ppo",
    "'ppo' (the clipped surrogate, minibatch epochs) or 'trpo' (one natural-gradient step per iteration under a hard KL bound, see the trpo_* fields); the value network trains by minibatch epochs either way.",
    one_of(ALGORITHMS),
  )
  env: str = _field(
    "brax/inverted_pendulum",
    "environment name, '<source>/<name>' (see `envs.available()`).",
    ENV_NAME,
  )
  env_backend: str | None = _field(
    None, "Brax physics pipeline or Playground implementation; None for the default."
  )
  num_timesteps: int = _field(
    2_000_000, "environment steps to train for (rounded up to whole chunks of iterations).", COUNT
  )
  num_envs: int = _field(1024, "environments stepped in parallel.", COUNT)
  episode_length: int = _field(
    1000, "time limit in simulator steps (counts action repeats, as in Brax).", COUNTER
  )
  action_repeat: int = _field(1, "times each action is applied.", COUNT)
  unroll_length: int = _field(
    5, "steps per trajectory segment; GAE bootstraps at each segment's end.", COUNT
  )
  batch_size: int = _field(1024, "trajectory segments per minibatch.", COUNT)
  num_minibatches: int = _field(32, "minibatches per epoch.", COUNT)
  num_updates_per_batch: int = _field(4, "epochs over each iteration's data.", COUNT)
  learning_rate: float = _field(
    3e-4, "Adam step size (the initial one for 'linear' and 'adaptive_kl').", POSITIVE
  )
  learning_rate_schedule: str = _field(
    "constant",
    "'constant', 'linear' (to zero at the end of training) or 'adaptive_kl' (rsl_rl's rule, see `desired_kl`).",
    one_of(SCHEDULES),
  )
  desired_kl: float = _field(
    1e-2,
    "KL the 'adaptive_kl' schedule steers to: after each minibatch the rate is divided by 1.5 when the exact KL > 2 * desired_kl and multiplied by 1.5 when it is < desired_kl / 2, clamped to [min_learning_rate, max_learning_rate].",
    POSITIVE,
  )
  min_learning_rate: float = _field(1e-5, "lower clamp of the adaptive rate.", POSITIVE)
  max_learning_rate: float = _field(1e-2, "upper clamp of the adaptive rate.", POSITIVE)
  target_kl: float | None = _field(
    None,
    "early stop; None disables it. When a minibatch's approx KL (k3, measured before its update) exceeds `target_kl_factor * target_kl`, that update and every remaining minibatch update of the iteration are skipped.",
    POSITIVE,
  )
  target_kl_factor: float = _field(
    1.5, "the tolerance factor of the early stop (1.5, as in Stable-Baselines3).", POSITIVE
  )
  entropy_cost: float = _field(1e-2, "weight of the entropy bonus.", NON_NEGATIVE)
  discounting: float = _field(
    0.97, "discount factor gamma, in (0, 1].", Rule(lambda v: 0 < v <= 1, "in (0, 1]")
  )
  gae_lambda: float = _field(
    0.95, "GAE lambda, in [0, 1].", Rule(lambda v: 0 <= v <= 1, "in [0, 1]")
  )
  clipping_epsilon: float = _field(0.3, "PPO ratio clip epsilon.", POSITIVE)
  clipping_epsilon_value: float | None = _field(
    None,
    "clip of the value update around the rollout's values; None disables value clipping.",
    POSITIVE,
  )
  value_loss_coef: float = _field(
    0.5, "weight of the value loss 0.5 * (V - target)^2.", NON_NEGATIVE
  )
  normalize_advantage: bool = _field(True, "standardize advantages per minibatch.")
  reward_scaling: float = _field(10.0, "rewards are multiplied by this before GAE.", POSITIVE)
  normalize_observations: bool = _field(
    True, "running mean/std normalization of observations (Welford)."
  )
  max_grad_norm: float | None = _field(
    None, "global-norm gradient clip; None disables it.", POSITIVE
  )
  policy_hidden_layer_sizes: tuple[int, ...] = _field(
    (32, 32, 32, 32), "hidden layers of the policy MLP.", LAYER_SIZES
  )
  value_hidden_layer_sizes: tuple[int, ...] = _field(
    (256, 256, 256, 256, 256), "hidden layers of the value MLP.", LAYER_SIZES
  )
  activation: str = _field("swish", "hidden activation of both MLPs.", one_of(ACTIVATIONS))
  distribution_type: str = _field(
    "normal",
    "the policy's action distribution (Brax's names): 'normal', a diagonal Gaussian whose samples the env receives clipped to [-1, 1], or 'tanh_normal', a Gaussian squashed by tanh (Brax's default; exact log-probabilities from the kept pre-tanh sample, entropy estimated from one sample).",
    one_of(DISTRIBUTION_TYPES),
  )
  action_std_type: str = _field(
    "network",
    "'parameter' (a state-independent learned log-std) or 'network' (a second head of the policy MLP).",
    one_of(ACTION_STD_TYPES),
  )
  init_action_std: float = _field(0.7, "initial action standard deviation.", POSITIVE)
  min_action_std: float = _field(
    1e-3, "floor added to the action std (keeps the policy stochastic).", NON_NEGATIVE
  )
  num_evals: int = _field(
    20,
    "evaluations over training (one at the start, as in Brax); training runs in `num_evals - 1` chunks of iterations, one host call each.",
    COUNT,
  )
  num_eval_envs: int = _field(
    128, "environments per evaluation; each runs one full episode.", COUNT
  )
  deterministic_eval: bool = _field(True, "evaluate the mean action instead of sampling.")
  trpo_max_kl: float = _field(
    1e-2, "TRPO's bound delta on the mean exact KL(old || new) of each policy step.", POSITIVE
  )
  trpo_cg_iterations: int = _field(
    10, "conjugate-gradient iterations for the natural-gradient direction.", COUNTER
  )
  trpo_cg_damping: float = _field(
    0.1, "damping added to the Fisher matrix (F + damping * I).", NON_NEGATIVE
  )
  trpo_max_backtracks: int = _field(
    10, "line-search candidates tried before the step is rejected.", COUNTER
  )
  trpo_backtrack_coef: float = _field(
    0.8, "each candidate step is this fraction of the previous one.", FRACTION
  )
  num_seeds: int = _field(
    1,
    "independent seeds trained together (seeds seed, seed + 1, ...), `jax.vmap`ped over the whole training step; metrics get a leading seed axis.",
    COUNT,
  )
  monitor_window: int = _field(
    10,
    "iterations of history the failure labels compare against (the median update KL of `kl_spike`, the median rollout return of `return_drop`).",
    Rule(lambda v: 2 <= v <= 10_000, "in [2, 10000]: the device keeps that history"),
  )
  kl_spike_factor: float = _field(
    5.0,
    "`kl_spike` fires when an update's KL (approx, k3, between the rollout policy and the updated one, over the whole batch) exceeds this factor times the reference: `target_kl` if set, else `desired_kl` under 'adaptive_kl', else the median update KL of the last `monitor_window` iterations (once half of them are in).",
    Rule(lambda v: v > 1, "> 1"),
  )
  kl_spike_max: float = _field(
    0.1, "`kl_spike` also fires when an update's KL exceeds this, whatever the reference.", POSITIVE
  )
  kl_spike_min: float = _field(
    1e-3, "an update KL at or below this is never a spike (tiny KLs are noise).", POSITIVE
  )
  clip_saturated_fraction: float = _field(
    0.25,
    "`clip_saturated` fires when more than this fraction of the batch's ratios lie outside the clip band after the update.",
    FRACTION,
  )
  clip_idle_fraction: float = _field(
    1e-3, "an update is idle when at most this fraction of ratios are clipped.", FRACTION
  )
  clip_idle_iterations: int = _field(
    10, "`clip_idle` fires from this many idle updates in a row on.", COUNTER
  )
  entropy_collapse_std: float = _field(
    0.02, "`entropy_collapse` fires when the mean action std falls below this.", POSITIVE
  )
  entropy_collapse_drop: float = _field(
    0.3,
    "`entropy_collapse` also fires when the mean action std loses more than this fraction of itself in one iteration.",
    FRACTION,
  )
  return_drop_fraction: float = _field(
    0.5,
    "`return_drop` fires when the rollout return falls below the median of the last `monitor_window` ones by more than this fraction of that median's magnitude.",
    FRACTION,
  )
  max_nonfinite_iterations: int = _field(
    3,
    "training stops with an error after this many `nonfinite` iterations in a row (NaN or Inf in the rollout, loss, gradients or parameters: such an update is skipped on the device and the state stays as it was before it).",
    COUNTER,
  )
  checkpoint_interval: int = _field(
    1,
    "iterations between checkpoints of a run directory (taken at the first chunk end past the interval, and always at the end).",
    COUNT,
  )
  keep_checkpoints: int = _field(
    3, "how many of the latest checkpoints a run directory keeps.", COUNT
  )
  seed: int = _field(
    0,
    "PRNG seed.",
    Rule(lambda v: 0 <= v < 2**32, "in [0, 2**32): jax.random.PRNGKey keeps only its low 32 bits"),
  )

  def __post_init__(self):
    for name in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
      value = getattr(self, name)
      if isinstance(value, list):  # a list from JSON or a CLI: store the hashable form
        object.__setattr__(self, name, tuple(value))
    for field in dataclasses.fields(self):
      _check_field(field, getattr(self, field.name))
    _check_combinations(self)

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


# Field type (as annotated) -> (accepted kinds, description for the error message).
_KINDS = {
  "int": ((numbers.Integral,), "an int"),
  "float": ((numbers.Real,), "a number"),
  "bool": ((bool,), "a bool"),
  "str": ((str,), "a string"),
  "tuple[int, ...]": ((tuple,), "a tuple of ints"),
}


def _is_finite(value: numbers.Real) -> bool:
  """True for a number that is a finite float (math.isfinite overflows on ints past 1e308)."""
  try:
    return math.isfinite(value)
  except OverflowError:
    return False


def _check_field(field: dataclasses.Field, value: Any) -> None:
  """The field's type (finite numbers, bools apart from ints), then its rule."""
  optional = field.type.endswith(" | None")
  if value is None and optional:
    return
  kinds, description = _KINDS[field.type.removesuffix(" | None")]
  ok = isinstance(value, kinds) and (isinstance(value, bool) == (kinds == (bool,)))
  if ok and isinstance(value, tuple):
    ok = all(
      isinstance(v, numbers.Integral) and not isinstance(v, bool) and _is_finite(v) for v in value
    )
  if ok and isinstance(value, numbers.Real) and not _is_finite(value):
    ok = False
  none = " or None" if optional else ""
  if not ok:
    raise ValueError(
      f"{field.name} must be {description}{none} (finite), got {value!r} "
      f"of type {type(value).__name__}"
    )
  rule = field.metadata["rule"]
  if rule is not None and not rule.ok(value):
    raise ValueError(f"{field.name} ({value!r}) must be {rule.text}{none}")


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def _check_combinations(c: PPOConfig) -> None:
  """The rules that tie several fields together."""
  source = c.env.partition("/")[0]
  _require(
    c.env_backend is None or c.env_backend in BACKENDS[source],
    f"env_backend ({c.env_backend!r}) must be None or one of {BACKENDS[source]} for {source}/ envs",
  )
  _require(
    c.seed + c.num_seeds <= 2**32,
    f"seed + num_seeds - 1 ({c.seed} + {c.num_seeds} - 1) must be < 2**32: the panel's seeds",
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
  _require(
    c.num_iterations < 2**31,
    f"num_timesteps ({c.num_timesteps}) and num_evals ({c.num_evals}) give {c.num_iterations} "
    f"iterations of {c.env_steps_per_iteration} env steps; the iteration count must be < 2**31",
  )
  _require(
    c.kl_spike_min < c.kl_spike_max,
    f"kl_spike_min ({c.kl_spike_min}) must be < kl_spike_max ({c.kl_spike_max})",
  )
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

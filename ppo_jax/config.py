"""PPOConfig: every hyperparameter of a run, checked before anything compiles.

Fields that Brax's `ppo.train` also has keep Brax's name and meaning, so a Brax or MuJoCo
Playground config ports by copying its keyword arguments. In particular one training
iteration collects `batch_size * num_minibatches` trajectory segments of `unroll_length`
steps (`batch_size * num_minibatches / num_envs` segments per env, one after the other),
then makes `num_updates_per_batch` epochs of `num_minibatches` minibatch updates.

Each field carries its meaning and its rule (`rules.setting`); `__post_init__` checks every field's
type and rule, then the rules that tie fields together, and raises a ValueError that names
the field, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import math

from envs import RANDOMIZATIONS, SOURCES
from ppo_jax.combinations import check_combinations
from ppo_jax.rules import (
  COUNT,
  COUNTER,
  FRACTION,
  LAYER_SIZES,
  NON_NEGATIVE,
  POSITIVE,
  Rule,
  check_field,
  one_of,
  setting,
)

ALGORITHMS = ("ppo", "trpo")
# Brax's LRSchedule names ("NONE" is read as None, a constant rate), and ours beyond them.
SCHEDULES = ("NONE", "ADAPTIVE_KL", "LINEAR")
ACTIVATIONS = ("swish", "tanh", "relu", "elu", "gelu")  # functions of flax.linen, by name
DISTRIBUTION_TYPES = ("normal", "tanh_normal")
# jax.default_matmul_precision's names: the first three are lax.Precision's, the others the
# algorithm each stands for on a GPU (bfloat16 = "default", tensorfloat32 = "high").
MATMUL_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


# The form only; `envs.check_name` knows the names (before any run directory or compilation), so
# a run of an env of one's own loads where that env is not registered (`load_policy` needs none).
ENV_NAME = Rule(
  lambda v: all(v.partition("/")[::2]),
  f"'<source>/<name>' with source one of {SOURCES} or one's own (envs.register)",
)


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Hyperparameters of one PPO run. Defaults train brax inverted_pendulum with Brax's settings.

  Every field carries its meaning as `help` metadata: `PPOConfig.field_help()` and the CLI's
  --help read it from there; docs/configuration.md lists every field with its default.
  """

  algorithm: str = setting(
    "ppo",
    "'ppo' (the clipped surrogate, minibatch epochs) or 'trpo' (one natural-gradient step per iteration under a hard KL bound, see the trpo_* fields); the value network trains by minibatch epochs either way.",
    one_of(ALGORITHMS),
  )
  env: str = setting(
    "brax/inverted_pendulum",
    "environment name, '<source>/<name>' (see `envs.available()`; `envs.register` adds one's own).",
    ENV_NAME,
  )
  env_backend: str | None = setting(
    None, "Brax physics pipeline or Playground implementation; None for the default."
  )
  randomization: str | None = setting(
    None,
    "domain randomization: the name of a registered `randomization_fn` (envs.RANDOMIZATIONS, e.g. 'cartpole' or 'brax_ant'; `envs.randomization.register` adds one's own), drawn per env from the run's key; None for none.",
    Rule(
      lambda v: v in RANDOMIZATIONS,
      "a name in envs.RANDOMIZATIONS (envs.randomization.register adds one)",
    ),
  )
  num_timesteps: int = setting(
    2_000_000, "environment steps to train for (rounded up to whole chunks of iterations).", COUNT
  )
  num_envs: int = setting(1024, "environments stepped in parallel.", COUNT)
  episode_length: int = setting(
    1000, "time limit in simulator steps (counts action repeats, as in Brax).", COUNTER
  )
  action_repeat: int = setting(1, "times each action is applied.", COUNT)
  unroll_length: int = setting(
    5, "steps per trajectory segment; GAE bootstraps at each segment's end.", COUNT
  )
  batch_size: int = setting(1024, "trajectory segments per minibatch.", COUNT)
  num_minibatches: int = setting(32, "minibatches per epoch.", COUNT)
  num_updates_per_batch: int = setting(4, "epochs over each iteration's data.", COUNT)
  learning_rate: float = setting(
    3e-4, "Adam step size (the initial one for 'LINEAR' and 'ADAPTIVE_KL').", POSITIVE
  )
  learning_rate_schedule: str | None = setting(
    None,
    "None (or Brax's 'NONE') for a constant rate, 'ADAPTIVE_KL' (rsl_rl's rule, as in Brax, see `desired_kl`) or 'LINEAR' (to zero at the end of training).",
    one_of(SCHEDULES),
  )
  desired_kl: float = setting(
    1e-2,
    "KL the 'ADAPTIVE_KL' schedule steers to: after each minibatch the rate is divided by 1.5 when the exact KL > 2 * desired_kl and multiplied by 1.5 when it is < desired_kl / 2, clamped to [learning_rate_schedule_min_lr, learning_rate_schedule_max_lr].",
    POSITIVE,
  )
  learning_rate_schedule_min_lr: float = setting(
    1e-5, "lower clamp of the adaptive rate.", POSITIVE
  )
  learning_rate_schedule_max_lr: float = setting(
    1e-2, "upper clamp of the adaptive rate.", POSITIVE
  )
  target_kl: float | None = setting(
    None,
    "early stop; None disables it. When a minibatch's approx KL (k3, measured before its update) exceeds `target_kl_factor * target_kl`, that update and every remaining minibatch update of the iteration are skipped.",
    POSITIVE,
  )
  target_kl_factor: float = setting(
    1.5, "the tolerance factor of the early stop (1.5, as in Stable-Baselines3).", POSITIVE
  )
  max_update_kl: float | None = setting(
    None,
    "trust-region backstop; None disables it. When the whole update's KL (`update_kl`, the closed-form KL from the rollout policy over the batch) exceeds this, the policy is pulled back toward its parameters before the update, halving the step up to `max_update_kl_backtracks` times until the KL is within the bound, else the update of the policy is rejected.",
    POSITIVE,
  )
  max_update_kl_backtracks: int = setting(
    5, "halvings the backstop tries before it rejects the policy's update.", COUNTER
  )
  entropy_cost: float = setting(1e-2, "weight of the entropy bonus.", NON_NEGATIVE)
  discounting: float = setting(
    0.97, "discount factor gamma, in (0, 1].", Rule(lambda v: 0 < v <= 1, "in (0, 1]")
  )
  gae_lambda: float = setting(
    0.95, "GAE lambda, in [0, 1].", Rule(lambda v: 0 <= v <= 1, "in [0, 1]")
  )
  clipping_epsilon: float = setting(0.3, "PPO ratio clip epsilon.", POSITIVE)
  clipping_epsilon_value: float | None = setting(
    None,
    "clip of the value update around the rollout's values; None disables value clipping.",
    POSITIVE,
  )
  vf_loss_coefficient: float = setting(
    0.5, "weight of the value loss 0.5 * (V - target)^2.", NON_NEGATIVE
  )
  normalize_advantage: bool = setting(True, "standardize advantages per minibatch.")
  bootstrap_on_timeout: bool = setting(
    True,
    "at a time-limit truncation, bootstrap with the value of the true final observation (True), or give the truncated step no advantage and its own value as target, as Brax's GAE does (False).",
  )
  recompute_advantages: bool = setting(
    True,
    "compute GAE on each minibatch with the value network of that moment, as Brax's ppo.train does, with minibatches of whole segments (True, Brax's algorithm); or once per iteration with the rollout's value network, with minibatches of single samples (False).",
  )
  reward_scaling: float = setting(10.0, "rewards are multiplied by this before GAE.", POSITIVE)
  normalize_observations: bool = setting(
    True, "running mean/std normalization of observations (Welford)."
  )
  max_grad_norm: float | None = setting(
    None, "global-norm gradient clip; None disables it.", POSITIVE
  )
  policy_hidden_layer_sizes: tuple[int, ...] = setting(
    (32, 32, 32, 32), "hidden layers of the policy MLP.", LAYER_SIZES
  )
  value_hidden_layer_sizes: tuple[int, ...] = setting(
    (256, 256, 256, 256, 256), "hidden layers of the value MLP.", LAYER_SIZES
  )
  activation: str = setting("swish", "hidden activation of both MLPs.", one_of(ACTIVATIONS))
  distribution_type: str = setting(
    "normal",
    "the policy's action distribution (Brax's names): 'normal', a diagonal Gaussian whose samples the env receives clipped to [-1, 1], or 'tanh_normal', a Gaussian squashed by tanh (Brax's default; exact log probabilities from the kept pre-tanh sample, entropy estimated from one sample).",
    one_of(DISTRIBUTION_TYPES),
  )
  policy_obs_key: str = setting(
    "state",
    "the entry of a dict observation the policy sees (Brax's name and default); an array observation is seen whole.",
  )
  value_obs_key: str = setting(
    "state",
    "the entry of a dict observation the value network sees, e.g. 'privileged_state', so that the critic sees more than the policy (Brax's name and default); an array observation is seen whole.",
  )
  state_dependent_std: bool = setting(
    True,
    "the action std is a second head of the policy MLP (True) or a learned parameter per action dimension (False); either way std = softplus(raw) + min_action_std.",
  )
  init_noise_std: float = setting(
    0.7, "initial action standard deviation (of the pre-tanh Gaussian for 'tanh_normal').", POSITIVE
  )
  min_action_std: float = setting(
    1e-3, "floor added to the action std (keeps the policy stochastic).", NON_NEGATIVE
  )
  num_evals: int = setting(
    20,
    "evaluations over training (one at the start, as in Brax); training runs in `num_evals - 1` chunks of iterations, one host call each.",
    COUNT,
  )
  num_resets_per_eval: int = setting(
    0,
    "times every env is reset (all episodes restarted) between two evaluations, evenly spaced, as in Brax; 0 never resets. With R > 0 the iterations between evaluations are R times ceil(num_timesteps / (chunks * steps per iteration * R)), as Brax rounds.",
    NON_NEGATIVE,
  )
  num_eval_envs: int = setting(
    128, "environments per evaluation; each runs one full episode.", COUNT
  )
  deterministic_eval: bool = setting(True, "evaluate the mean action instead of sampling.")
  trpo_max_kl: float = setting(
    1e-2, "TRPO's bound delta on the mean exact KL(old || new) of each policy step.", POSITIVE
  )
  trpo_cg_iterations: int = setting(
    10, "conjugate-gradient iterations for the natural-gradient direction.", COUNTER
  )
  trpo_cg_damping: float = setting(
    0.1, "damping added to the Fisher matrix (F + damping * I).", NON_NEGATIVE
  )
  trpo_max_backtracks: int = setting(
    10, "line-search candidates tried before the step is rejected.", COUNTER
  )
  trpo_backtrack_coef: float = setting(
    0.8, "each candidate step is this fraction of the previous one.", FRACTION
  )
  num_seeds: int = setting(
    1,
    "independent seeds trained together (seeds seed, seed + 1, ...), `jax.vmap`ped over the whole training step; metrics get a leading seed axis.",
    COUNT,
  )
  monitor_window: int = setting(
    10,
    "iterations of history the failure labels compare against (the median update KL of `kl_spike`, the median rollout return of `return_drop`).",
    Rule(lambda v: 2 <= v <= 10_000, "in [2, 10000]: the device keeps that history"),
  )
  kl_spike_factor: float = setting(
    5.0,
    "`kl_spike` fires when an update's KL (`update_kl`, the closed-form KL from the rollout policy to the updated one over the whole batch) exceeds this factor times the reference: `target_kl` if set, else `desired_kl` under 'ADAPTIVE_KL', else the median update KL of the last `monitor_window` iterations (once half of them are in).",
    Rule(lambda v: v > 1, "> 1"),
  )
  kl_spike_max: float = setting(
    0.1, "`kl_spike` also fires when an update's KL exceeds this, whatever the reference.", POSITIVE
  )
  kl_spike_min: float = setting(
    1e-3, "an update KL at or below this is never a spike (tiny KLs are noise).", POSITIVE
  )
  clip_saturated_fraction: float = setting(
    0.25,
    "`clip_saturated` fires when more than this fraction of the batch's ratios lie outside the clip band after the update.",
    FRACTION,
  )
  clip_idle_fraction: float = setting(
    1e-3, "an update is idle when at most this fraction of ratios are clipped.", FRACTION
  )
  clip_idle_iterations: int = setting(
    10, "`clip_idle` fires from this many idle updates in a row on.", COUNTER
  )
  entropy_collapse_std: float = setting(
    0.02, "`entropy_collapse` fires when the mean action std falls below this.", POSITIVE
  )
  entropy_collapse_drop: float = setting(
    0.3,
    "`entropy_collapse` also fires when the mean action std loses more than this fraction of itself in one iteration.",
    FRACTION,
  )
  return_drop_fraction: float = setting(
    0.5,
    "`return_drop` fires when the rollout return falls below the median of the last `monitor_window` ones by more than this fraction of that median's magnitude.",
    FRACTION,
  )
  max_nonfinite_iterations: int = setting(
    3,
    "training stops with an error after this many `nonfinite` iterations in a row (NaN or Inf in the rollout, loss, gradients or parameters: such an update is skipped on the device and the state stays as it was before it).",
    COUNTER,
  )
  checkpoint_interval: int = setting(
    1,
    "iterations between checkpoints of a run directory (taken at the first chunk end past the interval, and always at the end).",
    COUNT,
  )
  keep_checkpoints: int = setting(
    3, "how many of the latest checkpoints a run directory keeps.", COUNT
  )
  matmul_precision: str = setting(
    "highest",
    "precision of the float32 matrix products of the run's programs, by JAX's names (jax.default_matmul_precision): 'highest' (full float32, the default, as MuJoCo Playground's trainer sets it), 'high' or 'default' (on NVIDIA GPUs since Ampere, TensorFloat-32 or bfloat16 passes: faster, coarser). The CPU computes full float32 whatever the setting.",
    one_of(MATMUL_PRECISIONS),
  )
  seed: int = setting(
    0,
    "PRNG seed.",
    Rule(lambda v: 0 <= v < 2**32, "in [0, 2**32): jax.random.PRNGKey keeps only its low 32 bits"),
  )

  def __post_init__(self):
    if self.learning_rate_schedule == "NONE":  # Brax's other spelling of None
      object.__setattr__(self, "learning_rate_schedule", None)
    for name in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"):
      value = getattr(self, name)
      if isinstance(value, list):  # a list from JSON or a CLI: store the hashable form
        object.__setattr__(self, name, tuple(value))
    for field in dataclasses.fields(self):
      check_field(field, getattr(self, field.name))
    check_combinations(self)

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
  def iterations_per_reset(self) -> int:
    """Iterations between two resets of every env (between evaluations when there are none)."""
    resets = max(self.num_resets_per_eval, 1)
    steps = self.num_chunks * self.env_steps_per_iteration * resets
    return max(1, math.ceil(self.num_timesteps / steps))

  @property
  def iterations_per_chunk(self) -> int:
    return self.iterations_per_reset * max(self.num_resets_per_eval, 1)

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

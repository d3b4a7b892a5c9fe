"""Actor-critic networks as pure functions: a Gaussian policy and a separate value network.

Observations are normalized inside, with the running statistics passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppo_jax import normalization
from ppo_jax.distribution import DISTRIBUTIONS, DiagonalGaussian
from ppo_jax.normalization import Observation, RunningStatistics
from ppo_jax.types import ActorCriticParams, Params

if TYPE_CHECKING:
  from ppo_jax.config import PPOConfig


class MLP(nn.Module):
  layer_sizes: Sequence[int]
  activation: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for size in self.layer_sizes:
      x = self.activation(nn.Dense(size, kernel_init=nn.initializers.lecun_uniform())(x))
    return x


def _inverse_softplus(y: float) -> float:
  return y + math.log(-math.expm1(-y))


class GaussianPolicy(nn.Module):
  """obs [..., obs_size] -> (mean, std), each [..., action_size]."""

  hidden_layer_sizes: Sequence[int]
  action_size: int
  activation: Callable[[jax.Array], jax.Array]
  state_dependent_std: bool
  init_std: float
  min_std: float

  @nn.compact
  def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    hidden = MLP(self.hidden_layer_sizes, self.activation)(obs)
    # A small last layer starts every action near zero mean (Andrychowicz et al. 2021).
    small = nn.initializers.variance_scaling(0.01, "fan_in", "uniform")
    mean = nn.Dense(self.action_size, kernel_init=small)(hidden)
    raw_init = _inverse_softplus(max(self.init_std - self.min_std, 1e-6))
    if not self.state_dependent_std:
      raw = self.param("raw_std", nn.initializers.constant(raw_init), (self.action_size,))
      raw = jnp.broadcast_to(raw, mean.shape)
    else:
      raw = nn.Dense(
        self.action_size, kernel_init=small, bias_init=nn.initializers.constant(raw_init)
      )(hidden)
    return mean, jax.nn.softplus(raw) + self.min_std


class ValueNetwork(nn.Module):
  """obs [..., obs_size] -> value [...]."""

  hidden_layer_sizes: Sequence[int]
  activation: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    hidden = MLP(self.hidden_layer_sizes, self.activation)(obs)
    return nn.Dense(1, kernel_init=nn.initializers.lecun_uniform())(hidden)[..., 0]


@dataclasses.dataclass(frozen=True)
class ActorCritic:
  """Pure functions of the networks; observations are normalized inside.

  Attributes:
    init: key -> ActorCriticParams.
    policy: (policy_params, normalizer, obs [..., obs_size]) -> the action distribution; a
      dict observation's `policy_obs_key` entry.
    value: (value_params, normalizer, obs [..., obs_size]) -> value [...]; a dict
      observation's `value_obs_key` entry.
    distribution: the class `policy` returns (`DiagonalGaussian` or `TanhGaussian`).
  """

  init: Callable[[jax.Array], ActorCriticParams]
  policy: Callable[[Params, RunningStatistics, jax.Array], DiagonalGaussian]
  value: Callable[[Params, RunningStatistics, jax.Array], jax.Array]
  distribution: type[DiagonalGaussian] = DiagonalGaussian


def make_actor_critic(
  cfg: PPOConfig, observation_size: int | Mapping[str, int], action_size: int
) -> ActorCritic:
  """The networks `cfg` describes, for observations and actions of these sizes.

  With dict observations (`observation_size` a dict of sizes), the policy sees the entry
  `cfg.policy_obs_key` and the value network `cfg.value_obs_key`, each normalized by its own
  statistics; with array observations both see the whole array (Brax's rule).

  Raises:
    ValueError: a dict observation without the entry `policy_obs_key` or `value_obs_key` names.
  """
  check_obs_keys(cfg, observation_size)
  activation = getattr(nn, cfg.activation)  # config.ACTIVATIONS names flax.linen functions
  policy_net = GaussianPolicy(
    hidden_layer_sizes=cfg.policy_hidden_layer_sizes,
    action_size=action_size,
    activation=activation,
    state_dependent_std=cfg.state_dependent_std,
    init_std=cfg.init_noise_std,
    min_std=cfg.min_action_std,
  )
  value_net = ValueNetwork(cfg.value_hidden_layer_sizes, activation)
  distribution = DISTRIBUTIONS[cfg.distribution_type]
  policy_key, value_key = cfg.policy_obs_key, cfg.value_obs_key

  def init(key: jax.Array) -> ActorCriticParams:
    policy_init, value_init = jax.random.split(key)
    return ActorCriticParams(
      policy=policy_net.init(policy_init, _dummy(observation_size, policy_key)),
      value=value_net.init(value_init, _dummy(observation_size, value_key)),
    )

  def policy(params, normalizer, obs):
    return distribution(*policy_net.apply(params, _input(normalizer, obs, policy_key)))

  def value(params, normalizer, obs):
    return value_net.apply(params, _input(normalizer, obs, value_key))

  return ActorCritic(init=init, policy=policy, value=value, distribution=distribution)


def check_obs_keys(cfg: PPOConfig, observation_size: int | Mapping[str, int]) -> None:
  """Raises ValueError unless each network's observation key names an entry of a dict
  observation (an array observation is seen whole, whatever the keys)."""
  if not isinstance(observation_size, Mapping):
    return
  for field in ("policy_obs_key", "value_obs_key"):
    key = getattr(cfg, field)
    if key not in observation_size:
      raise ValueError(
        f"{field} ({key!r}) must name an entry of {cfg.env}'s dict observation: "
        f"{', '.join(f'{k!r} [{n}]' for k, n in observation_size.items())}"
      )


def _dummy(observation_size: int | Mapping[str, int], key: str) -> jax.Array:
  return jnp.zeros((1, normalization.entry(observation_size, key)), jnp.float32)


def _input(normalizer: RunningStatistics, obs: Observation, key: str) -> jax.Array:
  """A network's input: the observation entry `key` (Brax's rule), normalized."""
  selected = normalization.select(normalizer, key)
  return normalization.normalize(selected, normalization.entry(obs, key))


def make_policy(
  networks: ActorCritic,
  policy_params: Params,
  normalizer: RunningStatistics,
  deterministic: bool = False,
) -> Callable[..., jax.Array]:
  """A jittable policy(obs [..., obs_size], key=None) -> action in [-1, 1].

  Without a key (or with deterministic=True) it returns the distribution's mode.
  """

  def policy(obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
    distribution = networks.policy(policy_params, normalizer, obs)
    if key is None or deterministic:
      return distribution.to_env(distribution.mode())
    return distribution.to_env(distribution.sample(key))

  return policy

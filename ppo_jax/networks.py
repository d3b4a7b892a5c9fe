"""Actor-critic networks as an (init, apply) pair, and the Gaussian action distribution.

The policy is a diagonal Gaussian without squashing: actions are sampled unbounded, their
log-probabilities are exact, and the environment receives them clipped to [-1, 1]. That
keeps the KL between two policies available in closed form for the diagnostics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppo_jax import normalization
from ppo_jax.config import PPOConfig
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import ActorCriticParams, Params

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "swish": nn.swish,
  "tanh": nn.tanh,
  "relu": nn.relu,
  "elu": nn.elu,
  "gelu": nn.gelu,
}


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
  std_type: str
  init_std: float
  min_std: float

  @nn.compact
  def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    hidden = MLP(self.hidden_layer_sizes, self.activation)(obs)
    # A small last layer starts every action near zero mean (Andrychowicz et al. 2021).
    small = nn.initializers.variance_scaling(0.01, "fan_in", "uniform")
    mean = nn.Dense(self.action_size, kernel_init=small)(hidden)
    raw_init = _inverse_softplus(max(self.init_std - self.min_std, 1e-6))
    if self.std_type == "parameter":
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
    policy: (policy_params, normalizer, obs [..., obs_size]) -> (mean, std) [..., action_size].
    value: (value_params, normalizer, obs [..., obs_size]) -> value [...].
  """

  init: Callable[[jax.Array], ActorCriticParams]
  policy: Callable[[Params, RunningStatistics, jax.Array], tuple[jax.Array, jax.Array]]
  value: Callable[[Params, RunningStatistics, jax.Array], jax.Array]


def make_actor_critic(cfg: PPOConfig, observation_size: int, action_size: int) -> ActorCritic:
  activation = ACTIVATIONS[cfg.activation]
  policy_net = GaussianPolicy(
    hidden_layer_sizes=cfg.policy_hidden_layer_sizes,
    action_size=action_size,
    activation=activation,
    std_type=cfg.action_std_type,
    init_std=cfg.init_action_std,
    min_std=cfg.min_action_std,
  )
  value_net = ValueNetwork(cfg.value_hidden_layer_sizes, activation)
  dummy = jnp.zeros((1, observation_size), jnp.float32)

  def init(key: jax.Array) -> ActorCriticParams:
    policy_key, value_key = jax.random.split(key)
    return ActorCriticParams(
      policy=policy_net.init(policy_key, dummy), value=value_net.init(value_key, dummy)
    )

  def policy(params, normalizer, obs):
    return policy_net.apply(params, normalization.normalize(normalizer, obs))

  def value(params, normalizer, obs):
    return value_net.apply(params, normalization.normalize(normalizer, obs))

  return ActorCritic(init=init, policy=policy, value=value)


def gaussian_log_prob(action: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  """Log-density of a diagonal Gaussian, summed over the last (action) axis."""
  z = (action - mean) / std
  return jnp.sum(-0.5 * jnp.square(z) - jnp.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


def gaussian_entropy(std: jax.Array) -> jax.Array:
  """Entropy of a diagonal Gaussian, summed over the last (action) axis."""
  return jnp.sum(jnp.log(std) + 0.5 * (1.0 + math.log(2 * math.pi)), axis=-1)


def make_policy(
  networks: ActorCritic,
  policy_params: Params,
  normalizer: RunningStatistics,
  deterministic: bool = False,
) -> Callable[..., jax.Array]:
  """A jittable policy(obs [..., obs_size], key=None) -> action in [-1, 1].

  Without a key (or with deterministic=True) it returns the mean action.
  """

  def policy(obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
    mean, std = networks.policy(policy_params, normalizer, obs)
    if key is None or deterministic:
      return jnp.clip(mean, -1.0, 1.0)
    return jnp.clip(mean + std * jax.random.normal(key, mean.shape), -1.0, 1.0)

  return policy

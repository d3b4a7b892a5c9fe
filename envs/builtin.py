"""Small pure-JAX control tasks: fast to compile and to solve, for tests and quick checks.

Each task is a core environment (see `envs.base.CoreEnv`) with actions in [-1, 1].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TaskState:
  """State of a built-in task: the physical state plus what the wrapper reads."""

  physics: jax.Array
  obs: jax.Array
  reward: jax.Array
  done: jax.Array
  metrics: dict[str, jax.Array]


@struct.dataclass
class CartpoleSystem:
  """The cart-pole's physical constants (what a `randomization_fn` may vary per env)."""

  gravity: float = 9.8
  cart_mass: float = 1.0
  pole_mass: float = 0.1
  half_length: float = 0.5
  force_mag: float = 10.0
  dt: float = 0.02


@dataclasses.dataclass(frozen=True)
class CartpoleBalance:
  """Continuous cart-pole (Barto, Sutton and Anderson 1983 dynamics, as in Gym's CartPole).

  Reward 1 per step while the pole is up; the episode terminates (a fall) when the pole
  leaves +-12 degrees or the cart leaves +-2.4 m. The force is `10 N * clip(action, -1, 1)`;
  `sys` holds the constants.
  """

  sys: CartpoleSystem = dataclasses.field(default_factory=CartpoleSystem)
  observation_size: int = 4
  action_size: int = 1
  default_episode_length: int = 500
  solved_threshold: float = 475.0

  def reset(self, key: jax.Array) -> TaskState:
    physics = jax.random.uniform(key, (4,), minval=-0.05, maxval=0.05)
    return self._state(physics, reward=0.0, done=0.0, action=jnp.zeros(1))

  def step(self, state: TaskState, action: jax.Array) -> TaskState:
    sys = self.sys
    gravity, cart_mass, pole_mass, half_length, dt = (
      sys.gravity,
      sys.cart_mass,
      sys.pole_mass,
      sys.half_length,
      sys.dt,
    )
    total_mass = cart_mass + pole_mass
    force = sys.force_mag * jnp.clip(action[0], -1.0, 1.0)
    x, x_dot, theta, theta_dot = state.physics
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    temp = (force + pole_mass * half_length * theta_dot**2 * sin) / total_mass
    theta_acc = (gravity * sin - cos * temp) / (
      half_length * (4.0 / 3.0 - pole_mass * cos**2 / total_mass)
    )
    x_acc = temp - pole_mass * half_length * theta_acc * cos / total_mass
    physics = jnp.stack(
      [x + dt * x_dot, x_dot + dt * x_acc, theta + dt * theta_dot, theta_dot + dt * theta_acc]
    )
    fell = (jnp.abs(physics[0]) > 2.4) | (jnp.abs(physics[2]) > 12 * jnp.pi / 180)
    return self._state(physics, reward=1.0, done=fell.astype(jnp.float32), action=action)

  def _state(self, physics, reward, done, action) -> TaskState:
    return TaskState(
      physics=physics,
      obs=physics,
      reward=jnp.asarray(reward, jnp.float32),
      done=jnp.asarray(done, jnp.float32),
      metrics={"control_cost": jnp.sum(jnp.square(jnp.clip(action, -1.0, 1.0)))},
    )


@dataclasses.dataclass(frozen=True)
class PendulumSwingup:
  """Torque-limited pendulum swing-up (the classic Pendulum-v1 dynamics and cost).

  Never terminates; only the time limit ends an episode. Observation
  (cos theta, sin theta, theta_dot); torque `2 * clip(action, -1, 1)`; reward
  `-(theta^2 + 0.1 theta_dot^2 + 0.001 torque^2)` with theta wrapped to [-pi, pi).
  """

  observation_size: int = 3
  action_size: int = 1
  default_episode_length: int = 200
  solved_threshold: float = -200.0

  def reset(self, key: jax.Array) -> TaskState:
    physics = jax.random.uniform(
      key, (2,), minval=jnp.array([-jnp.pi, -1.0]), maxval=jnp.array([jnp.pi, 1.0])
    )
    return self._state(physics, reward=0.0, torque=jnp.zeros(()))

  def step(self, state: TaskState, action: jax.Array) -> TaskState:
    gravity, mass, length, dt = 10.0, 1.0, 1.0, 0.05
    torque = 2.0 * jnp.clip(action[0], -1.0, 1.0)
    theta, theta_dot = state.physics
    angle = (theta + jnp.pi) % (2 * jnp.pi) - jnp.pi
    reward = -(angle**2 + 0.1 * theta_dot**2 + 0.001 * torque**2)
    theta_dot = (
      theta_dot
      + (3 * gravity / (2 * length) * jnp.sin(theta) + 3.0 / (mass * length**2) * torque) * dt
    )
    theta_dot = jnp.clip(theta_dot, -8.0, 8.0)
    physics = jnp.stack([theta + theta_dot * dt, theta_dot])
    return self._state(physics, reward=reward, torque=torque)

  def _state(self, physics, reward, torque) -> TaskState:
    theta, theta_dot = physics
    return TaskState(
      physics=physics,
      obs=jnp.stack([jnp.cos(theta), jnp.sin(theta), theta_dot]),
      reward=jnp.asarray(reward, jnp.float32),
      done=jnp.zeros((), jnp.float32),
      metrics={"torque": jnp.abs(torque)},
    )


@struct.dataclass
class NoisyTaskState(TaskState):
  """A task state with the key of the observation noise."""

  key: jax.Array


@dataclasses.dataclass(frozen=True)
class CartpolePrivileged:
  """Cart-pole balance (`CartpoleBalance`) whose policy sees a noisy state: an asymmetric
  actor-critic's test bed.

  The observation is a dict, as Playground's locomotion envs return: "state" is the cart-pole
  state plus fresh Gaussian noise at every step (std `noise_std` per dimension: x, x_dot,
  theta, theta_dot), "privileged_state" the true state, which a critic may see
  (`value_obs_key="privileged_state"`) while the policy acts on the noisy one.
  """

  noise_std: tuple[float, ...] = (0.2, 0.2, 0.04, 0.2)
  sys: CartpoleSystem = dataclasses.field(default_factory=CartpoleSystem)
  action_size: int = 1
  default_episode_length: int = 500
  solved_threshold: float = 475.0

  @property
  def observation_size(self) -> dict[str, int]:
    return {"state": 4, "privileged_state": 4}

  def reset(self, key: jax.Array) -> NoisyTaskState:
    key, physics_key = jax.random.split(key)
    return self._observe(CartpoleBalance(self.sys).reset(physics_key), key)

  def step(self, state: NoisyTaskState, action: jax.Array) -> NoisyTaskState:
    return self._observe(CartpoleBalance(self.sys).step(state, action), state.key)

  def _observe(self, task: TaskState, key: jax.Array) -> NoisyTaskState:
    key, noise_key = jax.random.split(key)
    noise = jnp.asarray(self.noise_std) * jax.random.normal(noise_key, (4,))
    obs = {"state": task.physics + noise, "privileged_state": task.physics}
    return NoisyTaskState(**{**vars(task), "obs": obs}, key=key)


TASKS = {
  "cartpole_balance": CartpoleBalance,
  "cartpole_privileged": CartpolePrivileged,
  "pendulum_swingup": PendulumSwingup,
}

"""What a privileged critic knows that a symmetric one does not, on the same data.

    python -m experiments.privileged_critic [--seeds 3] [--iterations 3]

For each seed, the `cartpole_privileged` preset trains for a few iterations (a policy that still
fails). Its rollouts (256 envs, 1,000 steps) give Monte-Carlo discounted returns; two critics (MLPs
of 64, 64 units) are fitted by regression to the same returns, one on the noisy
state the policy sees (a symmetric critic) and one on the true state (a privileged critic). The
explained variance on held-out envs measures what each input tells about the return, with the
policy and the data held fixed: in a training run the two critics see different data, since
their policies differ.
"""

from __future__ import annotations

import argparse
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from experiments.presets import PRESETS
from ppo_jax import PPOConfig, train
from ppo_jax.rollout import collect
from ppo_jax.step import init_state, make_env_and_networks

ENVS, STEPS, KEPT, HELD_OUT = 256, 1000, 400, 64  # returns of the first KEPT steps are kept
HIDDEN = (64, 64)


class Critic(nn.Module):
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.hidden:
      x = nn.swish(nn.Dense(width)(x))
    return nn.Dense(1)(x)[..., 0]


def discounted_returns(reward, termination, truncation, discount: float) -> jax.Array:
  """[T, B] returns of every step to the end of its episode or of the rollout."""

  def back(following, step):
    r, term, trunc = step
    g = r + discount * (1 - term) * (1 - trunc) * following
    return g, g

  zeros = jnp.zeros(reward.shape[1])
  return jax.lax.scan(back, zeros, (reward, termination, truncation), reverse=True)[1]


def held_out_explained_variance(
  x: jax.Array, y: jax.Array, hidden: tuple[int, ...], key: jax.Array
) -> float:
  """Fits a critic to y [T, B] from x [T, B, D] on the first envs; its explained variance on
  the last HELD_OUT envs."""
  split = x.shape[1] - HELD_OUT
  flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
  x_fit, y_fit, x_test, y_test = (
    flat(x[:, :split]),
    flat(y[:, :split]),
    flat(x[:, split:]),
    flat(y[:, split:]),
  )
  mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
  y_mean, y_std = y_fit.mean(), y_fit.std() + 1e-6
  critic, optimizer = Critic(hidden), optax.adam(1e-3)
  params = critic.init(key, x_fit[:1])

  def loss(params, xb, yb):
    return jnp.mean(jnp.square(critic.apply(params, (xb - mean) / std) - (yb - y_mean) / y_std))

  def step(carry, k):
    params, opt_state = carry
    rows = jax.random.randint(k, (4096,), 0, x_fit.shape[0])
    updates, opt_state = optimizer.update(
      jax.grad(loss)(params, x_fit[rows], y_fit[rows]), opt_state
    )
    return (optax.apply_updates(params, updates), opt_state), None

  fit = jax.jit(lambda p, s, k: jax.lax.scan(step, (p, s), jax.random.split(k, 4000))[0])
  params, _ = fit(params, optimizer.init(params), key)
  predicted = critic.apply(params, (x_test - mean) / std) * y_std + y_mean
  return float(1 - jnp.var(y_test - predicted) / jnp.var(y_test))


def compare_critics(cfg: PPOConfig, seed: int) -> tuple[float, dict[str, float]]:
  """Trains `cfg`, rolls its policy out and fits both critics: (falls in the kept steps,
  {observation entry: held-out explained variance})."""
  result = train(cfg, progress_fn=None, show_progress=False)
  env, networks = make_env_and_networks(cfg)
  data_cfg = dataclasses.replace(cfg, num_envs=ENVS, batch_size=ENVS, num_minibatches=1)
  start = init_state(data_cfg, env, networks, jax.random.PRNGKey(1000 + seed))
  policy, normalizer = result.params.policy, result.normalizer
  rollout = jax.jit(lambda s, k: collect(env, networks, policy, normalizer, s, k, 1, STEPS))
  _, transitions, _ = rollout(start.env_state, jax.random.PRNGKey(2000 + seed))
  returns = discounted_returns(
    transitions.reward, transitions.termination, transitions.truncation, cfg.discounting
  )[:KEPT]
  explained = {
    entry: held_out_explained_variance(
      transitions.obs[entry][:KEPT], returns, HIDDEN, jax.random.PRNGKey(seed)
    )
    for entry in ("state", "privileged_state")
  }
  return float(transitions.termination[:KEPT].sum()), explained


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--iterations", type=int, default=3, help="training before the data")
  args = parser.parse_args(argv)
  preset = PRESETS["cartpole_privileged"]
  for seed in range(args.seeds):
    steps = args.iterations * preset.env_steps_per_iteration
    cfg = dataclasses.replace(preset, seed=seed, num_timesteps=steps, num_evals=2)
    falls, explained = compare_critics(cfg, seed)
    print(
      f"seed {seed}: {falls:.0f} falls in {KEPT} x {ENVS} steps; held-out explained variance "
      f"of the return: noisy state (symmetric critic) {explained['state']:.3f}, "
      f"true state (privileged critic) {explained['privileged_state']:.3f}",
      flush=True,
    )


if __name__ == "__main__":
  main()

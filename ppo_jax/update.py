"""The learner's update: epochs of minibatch gradient steps, with the KL brakes on the device.

`epochs` runs `num_updates_per_batch` epochs of `num_minibatches` updates as two nested
scans. The target-KL early stop skips every update after the first minibatch whose KL is
too high; the adaptive learning rate moves after each minibatch. Both act inside the scan,
with no host round-trip. `backstop` then bounds the KL of the update as a whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ppo_jax import sharding, trpo, trust_region
from ppo_jax.config import PPOConfig
from ppo_jax.losses import LossMetrics
from ppo_jax.normalization import RunningStatistics
from ppo_jax.types import ActorCriticParams, Batch, Metrics, Params, Segments

if TYPE_CHECKING:
  from ppo_jax.networks import ActorCritic

# loss_fn(params, normalizer, minibatch, key) -> (loss, metrics without gradient).
LossFn = Callable[
  [ActorCriticParams, RunningStatistics, Batch | Segments, jax.Array],
  tuple[jax.Array, LossMetrics],
]


def make_optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
  """Adam's direction, after optional global-norm clipping; the step size is applied apart,
  because it is a traced value that the schedules move."""
  clip = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm else []
  return optax.chain(*clip, optax.scale_by_adam())


def scheduled_learning_rate(cfg: PPOConfig, iteration: jax.Array, current: jax.Array) -> jax.Array:
  """Learning rate for an iteration's first update.

  Args:
    iteration: [] completed iterations.
    current: [] the rate the state carries (the adaptive schedule's own value).
  """
  if cfg.learning_rate_schedule == "LINEAR":
    progress = iteration.astype(jnp.float32) / cfg.num_iterations
    return jnp.asarray(cfg.learning_rate, jnp.float32) * (1.0 - progress)
  # None keeps cfg.learning_rate; "ADAPTIVE_KL" carries its own value.
  return current


def adapt_learning_rate(cfg: PPOConfig, learning_rate: jax.Array, kl: jax.Array) -> jax.Array:
  """rsl_rl's rule: / 1.5 above 2 * desired_kl, * 1.5 below desired_kl / 2, clamped."""
  learning_rate = jnp.where(kl > 2.0 * cfg.desired_kl, learning_rate / 1.5, learning_rate)
  learning_rate = jnp.where(kl < 0.5 * cfg.desired_kl, learning_rate * 1.5, learning_rate)
  return jnp.clip(
    learning_rate, cfg.learning_rate_schedule_min_lr, cfg.learning_rate_schedule_max_lr
  )


class Learner(NamedTuple):
  """What the minibatch updates move."""

  params: ActorCriticParams
  opt_state: optax.OptState
  learning_rate: jax.Array


class UpdateMetrics(NamedTuple):
  """One minibatch update: the loss metrics before it, and what the update did."""

  loss: LossMetrics
  grad_norm: jax.Array
  learning_rate: jax.Array
  applied: jax.Array


def minibatch_update(
  cfg: PPOConfig,
  loss_fn: LossFn,
  optimizer: optax.GradientTransformation,
  normalizer: RunningStatistics,
  learner: Learner,
  stopped: jax.Array,
  minibatch: Batch | Segments,
  key: jax.Array,
) -> tuple[Learner, jax.Array, UpdateMetrics]:
  """One gradient step on a minibatch (samples or segments), unless the early stop is on.

  `key` is the loss's (the entropy estimate of a tanh-squashed policy).

  Returns:
    (the learner after it, whether the early stop is on from now, its metrics).
  """

  def unless_stopped(run, skip, *args):
    if cfg.target_kl is None:  # nothing can stop the updates: no branch at all
      return run(*args)
    return jax.lax.cond(stopped, skip, run, *args)

  def measure(params):
    _, metrics = loss_fn(params, normalizer, minibatch, key)
    return metrics, jax.tree.map(jnp.zeros_like, params)

  def measure_and_differentiate(params):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, normalizer, minibatch, key
    )
    return metrics, grads

  # Once stopped, a minibatch is only measured: no gradient is computed.
  metrics, grads = unless_stopped(measure_and_differentiate, measure, learner.params)
  if cfg.target_kl is not None:
    stopped = stopped | (metrics.approx_kl > cfg.target_kl_factor * cfg.target_kl)
  learning_rate = learner.learning_rate
  if cfg.learning_rate_schedule == "ADAPTIVE_KL":
    learning_rate = jnp.where(
      stopped, learning_rate, adapt_learning_rate(cfg, learning_rate, metrics.exact_kl)
    )

  def apply(params, opt_state):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
    return params, opt_state

  params, opt_state = unless_stopped(apply, lambda p, o: (p, o), learner.params, learner.opt_state)
  update = UpdateMetrics(
    loss=metrics,
    grad_norm=optax.global_norm(grads),
    learning_rate=learning_rate,
    applied=~stopped,
  )
  return Learner(params, opt_state, learning_rate), stopped, update


def epochs(
  cfg: PPOConfig,
  loss_fn: LossFn,
  optimizer: optax.GradientTransformation,
  learner: Learner,
  normalizer: RunningStatistics,
  batch: Batch | Segments,
  key: jax.Array,
) -> tuple[Learner, UpdateMetrics]:
  """`num_updates_per_batch` epochs over `batch`, each in a fresh random order: of the
  samples of a `Batch` [N, ...], or of the whole segments of `Segments` [S, T, ...].

  Returns:
    (the learner after them, the metrics of every minibatch update [epochs, minibatches]).
  """

  def epoch(carry, epoch_key):
    order = jax.random.permutation(epoch_key, len(batch.value))
    minibatches = jax.tree.map(
      lambda x: x[order].reshape(cfg.num_minibatches, -1, *x.shape[1:]), batch
    )
    minibatches = sharding.split_envs(minibatches, axis=1)  # each device takes its samples

    # Folded in, so the shuffles stay those of the epoch key alone.
    loss_keys = jax.random.split(jax.random.fold_in(epoch_key, 1), cfg.num_minibatches)

    def step(carry, minibatch_and_key):
      learner, stopped, update = minibatch_update(
        cfg, loss_fn, optimizer, normalizer, *carry, *minibatch_and_key
      )
      return (learner, stopped), update

    return jax.lax.scan(step, carry, (minibatches, loss_keys))

  # Epoch keys are folded in, so epoch e shuffles alike whatever num_updates_per_batch is.
  epoch_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(cfg.num_updates_per_batch))
  (learner, _), updates = jax.lax.scan(epoch, (learner, jnp.array(False)), epoch_keys)
  return learner, updates


def reduce_epochs(updates: UpdateMetrics) -> Metrics:
  """[E, M] minibatch metrics -> per-epoch "<name>_per_epoch" [E] and iteration scalars."""
  applied = updates.applied.astype(jnp.float32)
  per_epoch = {name: jnp.mean(value, axis=1) for name, value in updates.loss._asdict().items()}
  per_epoch["action_std_min"] = jnp.min(updates.loss.action_std_min, axis=1)
  # Gradient norms and rates of the updates that were applied (0 where none was).
  per_epoch["grad_norm"] = jnp.sum(updates.grad_norm * applied, axis=1) / jnp.maximum(
    jnp.sum(applied, axis=1), 1.0
  )
  per_epoch["learning_rate"] = updates.learning_rate[:, -1]
  metrics = {f"{name}_per_epoch": value for name, value in per_epoch.items()}
  metrics.update({name: jnp.mean(value) for name, value in per_epoch.items()})
  metrics["action_std_min"] = jnp.min(per_epoch["action_std_min"])
  metrics["learning_rate"] = per_epoch["learning_rate"][-1]
  metrics["minibatch_updates_applied"] = jnp.sum(applied)
  metrics["epochs_applied"] = jnp.sum(jnp.any(updates.applied, axis=1))
  return metrics


def backstop(
  cfg: PPOConfig,
  networks: ActorCritic,
  old_policy: Params,
  new_policy: Params,
  normalizer: RunningStatistics,
  batch: Batch,
) -> tuple[Params, Metrics]:
  """The trust-region backstop: the policy after the update, its whole change
  (`trust_region.update_kl`) bounded by `max_update_kl`.

  `old_policy` is the behaviour policy's parameters re-expressed under `normalizer`
  (`trust_region.reexpress`). Within the bound the update stands; beyond it the policy is
  pulled back along the update, old + 0.5**k (new - old) for k = 1 .. `max_update_kl_backtracks`
  (TRPO's line search on the KL alone), to the first within the bound; when none is, the
  policy is the old one, bitwise. The value network keeps its update, and the optimizer state
  its moments: they are statistics of the gradients seen, not of the step taken, and the next
  iteration's first minibatches wash them out.

  Returns:
    (policy params, {"backstop_fraction": the fraction of the update kept (1, 0.5**k or 0),
    "backstop_steps": the halvings made (max_update_kl_backtracks when rejected)}).
  """

  def kl(policy):
    return trust_region.update_kl(networks, policy, normalizer, batch)

  def pull_back(_):
    step = jax.tree.map(jnp.subtract, new_policy, old_policy)
    search = trpo.line_search(
      None, kl, old_policy, step, None, cfg.max_update_kl, cfg.max_update_kl_backtracks + 1, 0.5
    )
    steps = jnp.minimum(search.backtracks, cfg.max_update_kl_backtracks)
    return search.params, search.step_fraction, steps

  def keep(_):
    return new_policy, jnp.ones(()), jnp.zeros((), jnp.int32)

  policy, fraction, steps = jax.lax.cond(kl(new_policy) <= cfg.max_update_kl, keep, pull_back, None)
  return policy, {"backstop_fraction": fraction, "backstop_steps": steps}

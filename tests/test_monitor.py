"""The trust-region monitor: safety metrics, failure labels, skipped nonfinite updates, the
largest-KL comparison and the health report."""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import fresh, run_steps, tiny

import envs
from envs.builtin import CartpoleBalance
from experiments.presets import PRESETS
from ppo_jax import diagnostics, health, load_policy, monitor, runner, train
from ppo_jax.health import LARGEST_KL_DIR
from ppo_jax.rollout import unroll
from ppo_jax.runner import NonFiniteError
from ppo_jax.step import make_env_and_networks

# Safety metrics.


def test_action_saturation_extremes_and_numpy_reference():
  assert diagnostics.action_saturation(jnp.zeros((5, 3))) == 0.0
  assert diagnostics.action_saturation(jnp.full((5, 3), 7.0)) == 1.0
  assert diagnostics.action_saturation(jnp.full((5, 3), -7.0)) == 1.0
  assert diagnostics.action_saturation(jnp.array([1.0, -1.0])) == 1.0  # at the bound counts
  action = np.random.default_rng(0).normal(0.0, 1.0, (64, 6)).astype(np.float32)
  assert diagnostics.action_saturation(jnp.asarray(action)) == pytest.approx(
    np.mean(np.abs(action) >= 1.0)
  )


def test_all_finite():
  assert diagnostics.all_finite({"a": jnp.ones(3), "b": jnp.arange(3)})
  assert not diagnostics.all_finite({"a": jnp.array([1.0, jnp.nan]), "b": jnp.arange(3)})
  assert not diagnostics.all_finite([jnp.array([jnp.inf])])


def test_episode_stats_match_a_numpy_count():
  """Lengths, the shortest episode and the env metrics' per-episode means (the built-in
  cartpole reports its control cost sum(a^2) per step)."""
  cfg = tiny(episode_length=12)
  env, networks, state = fresh(cfg)
  env_state, transitions, stats = jax.jit(unroll, static_argnums=(0, 1, 6))(
    env, networks, state.params.policy, state.normalizer, state.env_state, jax.random.key(3), 40
  )
  action = np.clip(np.asarray(transitions.action), -1, 1)  # [T, B, 1]
  done = np.maximum(np.asarray(transitions.termination), np.asarray(transitions.truncation))
  lengths, cost_means, running_cost, running_length = [], [], np.zeros(8), np.zeros(8)
  for t in range(40):  # every env starts a fresh episode at t = 0
    running_cost += np.sum(action[t] ** 2, axis=-1)
    running_length += 1
    for b in np.flatnonzero(done[t]):
      lengths.append(running_length[b])
      cost_means.append(running_cost[b] / running_length[b])
      running_cost[b] = running_length[b] = 0
  assert float(stats.episodes) == len(lengths) > 8
  assert float(stats.length_sum) == sum(lengths)
  assert float(stats.length_min) == min(lengths)
  assert float(stats.metrics["control_cost"]) == pytest.approx(sum(cost_means), rel=1e-5)


# Failure labels.


def numpy_labels(cfg, signals):
  """The label rules of `monitor.observe`, replayed in NumPy over a sequence of signals."""
  window = cfg.monitor_window
  kls, returns, last_std, idle, streak, out = [], [], np.nan, 0, 0, []
  for s in signals:
    ok = s["finite"]
    recent = kls[-window:]
    median = np.median(recent) if 2 * len(recent) >= window else np.nan
    relative = max(cfg.kl_spike_factor * median, cfg.kl_spike_min) if recent else np.nan
    threshold = cfg.kl_spike_max if np.isnan(median) else min(relative, cfg.kl_spike_max)
    recent_returns = returns[-window:]
    return_median = np.median(recent_returns) if 2 * len(recent_returns) >= window else np.nan
    idle = (idle + 1 if s["clip_fraction"] <= cfg.clip_idle_fraction else 0) if ok else idle
    labels = {
      "kl_spike": ok and s["update_kl"] > threshold,
      "clip_saturated": ok and s["clip_fraction"] > cfg.clip_saturated_fraction,
      "clip_idle": ok and idle >= cfg.clip_idle_iterations,
      "entropy_collapse": ok
      and (
        s["action_std"] < cfg.entropy_collapse_std
        or 1 - s["action_std"] / last_std > cfg.entropy_collapse_drop
      ),
      "return_drop": ok
      and s["episode_return"] < return_median - cfg.return_drop_fraction * abs(return_median),
      "nonfinite": not ok,
    }
    streak = 0 if ok else streak + 1
    if ok:
      kls.append(s["update_kl"])
      last_std = s["action_std"]
      if np.isfinite(s["episode_return"]):
        returns.append(s["episode_return"])
    out.append({**labels, "streak": streak})
  return out


def test_labels_match_numpy_rules():
  cfg = tiny(monitor_window=4, clip_idle_iterations=3)
  rng = np.random.default_rng(1)
  n = 60
  signals = [
    {
      "update_kl": float(rng.choice([1e-4, 0.004, 0.01, 0.03, 0.2])),
      "clip_fraction": float(rng.choice([0.0, 0.0005, 0.1, 0.4])),
      "action_std": float(rng.choice([0.01, 0.3, 0.5, 0.6])),
      "episode_return": float(rng.choice([np.nan, -50.0, 10.0, 100.0, 120.0])),
      "finite": bool(rng.random() > 0.15),
    }
    for _ in range(n)
  ]
  expected = numpy_labels(cfg, signals)

  def scan_step(state, s):
    state, labels = monitor.observe(cfg, state, monitor.Signals(**s))
    return state, {**labels, "streak": state.nonfinite_streak}

  stacked = {k: jnp.asarray([s[k] for s in signals]) for k in signals[0]}
  snapshot = monitor.PolicySnapshot(policy={}, normalizer=None)
  _, got = jax.jit(lambda x: jax.lax.scan(scan_step, monitor.init(cfg, snapshot), x))(stacked)
  got = jax.device_get(got)
  for name in (*monitor.LABELS, "streak"):
    np.testing.assert_array_equal(got[name], [e[name] for e in expected], err_msg=name)
  for name in monitor.LABELS:  # the sequence exercises every rule both ways
    assert 0 < got[name].sum() < n, name


@pytest.mark.slow
def test_aggressive_config_fires_kl_spike_and_clip_saturated_default_fires_neither():
  base = PRESETS["cartpole_balance"]
  aggressive = dataclasses.replace(
    base, learning_rate=1e-2, num_updates_per_batch=16, target_kl=None
  )
  _, calm = run_steps(base, 8)
  _, wild = run_steps(aggressive, 8)
  assert calm["label/kl_spike"].sum() == 0 and calm["label/clip_saturated"].sum() == 0
  assert wild["label/kl_spike"].sum() >= 2 and wild["label/clip_saturated"].sum() >= 1
  assert wild["update_kl"].max() > 10 * calm["update_kl"].max()
  for metrics in (calm, wild):  # every label agrees with the metrics it is decided from
    fired = metrics["label/kl_spike"].astype(bool)
    np.testing.assert_array_equal(fired, metrics["update_kl"] > metrics["kl_spike_threshold"])
    np.testing.assert_array_equal(
      metrics["label/clip_saturated"].astype(bool),
      metrics["update_clip_fraction"] > base.clip_saturated_fraction,
    )


# Nonfinite updates.


@dataclasses.dataclass(frozen=True)
class Broken:
  """The built-in cartpole, with `value` (NaN or Inf) in its rewards or observations."""

  field: str = "reward"
  value: float = float("nan")
  task: CartpoleBalance = CartpoleBalance()
  observation_size: int = 4
  action_size: int = 1

  def reset(self, key):
    return self.task.reset(key)

  def step(self, state, action):
    state = self.task.step(state, action)
    bad = jnp.full_like(getattr(state, self.field), self.value)
    return state.replace(**{self.field: bad})


def nan_env(cfg, field="reward", value=float("nan")):
  return envs.Environment(Broken(field, value), f"builtin/broken_{field}", cfg.episode_length)


@pytest.mark.parametrize("field, value", [("reward", np.nan), ("obs", np.inf)])
def test_nonfinite_rollouts_skip_the_update_and_keep_the_state(field, value):
  cfg = tiny()
  states, metrics = run_steps(cfg, 3, env=nan_env(cfg, field, value))
  assert metrics["label/nonfinite"].all() and metrics["nonfinite_rollout"].all()
  np.testing.assert_array_equal(metrics["nonfinite_streak"], [1, 2, 3])
  for before, after in zip(states[:-1], states[1:], strict=True):
    for name in ("params", "opt_state", "normalizer", "learning_rate"):
      chex.assert_trees_all_equal(getattr(before, name), getattr(after, name))
    assert after.iteration == before.iteration + 1  # the iteration is counted, and reported
  assert int(states[-1].monitor.largest_kl_iteration) == 0  # no update was ever recorded
  for label in ("kl_spike", "clip_saturated", "clip_idle", "entropy_collapse", "return_drop"):
    assert not metrics[f"label/{label}"].any(), label


def test_training_stops_after_repeated_nonfinite_iterations_keeping_the_checkpoint(
  tmp_path, monkeypatch
):
  cfg = tiny(num_evals=4, max_nonfinite_iterations=2)
  run_dir = tmp_path / "run"

  class Crash(Exception):
    pass

  calls = []

  def crash_after_first_chunk(record):
    calls.append(record)
    if len(calls) == 2:  # the initial evaluation, then the first chunk
      raise Crash

  with pytest.raises(Crash):
    train(cfg, run_dir, show_progress=False, progress_fn=crash_after_first_chunk)
  good = cfg.iterations_per_chunk
  checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
  assert checkpoints == [str(good)]

  # The run goes on in an env whose rewards have turned NaN.
  env, networks = make_env_and_networks(cfg)
  monkeypatch.setattr(runner, "make_env_and_networks", lambda cfg: (nan_env(cfg), networks))
  with pytest.raises(
    NonFiniteError, match=rf"iteration {good + 2}.*checkpoint \(iteration {good}\)"
  ):
    train(cfg, run_dir, resume=True, show_progress=False)
  assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == checkpoints
  report = json.loads((run_dir / health.HEALTH_FILE).read_text())
  assert report["label_counts"]["nonfinite"] == cfg.iterations_per_chunk
  assert report["label_first_iteration"]["nonfinite"] == good + 1


# The largest-KL update and the health report.


def test_largest_kl_snapshots_are_the_policies_around_that_update():
  cfg = tiny(num_updates_per_batch=4, learning_rate=3e-3)
  states, metrics = run_steps(cfg, 6)
  i = int(np.argmax(metrics["update_kl"]))
  kept = states[-1].monitor
  assert int(kept.largest_kl_iteration) == i + 1
  assert float(kept.largest_kl) == metrics["update_kl"][i]
  chex.assert_trees_all_equal(kept.before.policy, states[i].params.policy)
  chex.assert_trees_all_equal(kept.before.normalizer, states[i].normalizer)
  chex.assert_trees_all_equal(kept.after.policy, states[i + 1].params.policy)
  chex.assert_trees_all_equal(kept.after.normalizer, states[i + 1].normalizer)


def test_run_writes_health_report_and_largest_kl_comparison(tmp_path):
  cfg = tiny(num_evals=3, learning_rate=3e-3)
  run_dir = tmp_path / "run"
  result = train(cfg, run_dir, show_progress=False)
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

  report = json.loads((run_dir / health.HEALTH_FILE).read_text())
  assert report == json.loads(json.dumps(result.health))
  for label in monitor.LABELS:
    assert report["label_counts"][label] == sum(bool(r[f"label/{label}"]) for r in records)
  kls = [r["update_kl"] for r in records]
  largest = report["largest_kl_update"]
  assert largest["update_kl"] == max(kls) and kls[largest["iteration"] - 1] == max(kls)
  stds = [r["update_action_std"] for r in records]
  assert report["action_std"]["first"] == stds[0] and report["action_std"]["last"] == stds[-1]

  out = run_dir / LARGEST_KL_DIR
  comparison = json.loads((out / "comparison.json").read_text())
  assert comparison == report["largest_kl_comparison"]
  assert comparison["iteration"] == largest["iteration"]
  with np.load(out / "before_trace.npz") as before, np.load(out / "after_trace.npz") as after:
    # Same seeds: both start from the same states; each summary agrees with its trace.
    np.testing.assert_array_equal(before["observations"][0], after["observations"][0])
    for name, trace in (("before", before), ("after", after)):
      returns = np.sum(np.where(trace["alive"], trace["rewards"], 0.0), axis=0)
      np.testing.assert_allclose(comparison[name]["returns"], returns, rtol=1e-6)
      assert len(returns) == cfg.num_eval_envs
      # The saved policy is the one that acted (deterministic: the clipped mean action).
      policy = load_policy(out / name, deterministic=True)
      np.testing.assert_allclose(
        policy(trace["observations"][0]), trace["actions"][0], rtol=1e-5, atol=1e-6
      )


def test_alerts_warn_once_then_count():
  cfg = tiny()
  record = lambda i, **fired: {  # noqa: E731
    "iteration": i,
    "update_kl": 0.5,
    "kl_spike_threshold": 0.1,
    **{f"label/{label}": fired.get(label, False) for label in monitor.LABELS},
  }
  alerts = health.LabelAlerts(cfg)
  assert alerts.update([record(1), record(2)]) == []
  lines = alerts.update([record(3, kl_spike=True), record(4, kl_spike=True)])
  assert len(lines) == 1 and lines[0].startswith("warning: kl_spike at iteration 3 (update KL 0.5")
  assert alerts.update([record(5, kl_spike=True)]) == ["labels so far: kl_spike 3"]
  resumed = health.LabelAlerts(cfg, [record(1, kl_spike=True)])  # already announced
  assert resumed.update([record(2, kl_spike=True)]) == ["labels so far: kl_spike 2"]


def test_all_finite_over_mixed_dtypes():
  tree = {
    "half": jnp.array([1.0, jnp.inf], jnp.bfloat16),
    "single": jnp.ones((2, 3)),
    "count": jnp.arange(3),
  }
  assert not diagnostics.all_finite(tree)
  assert diagnostics.all_finite({**tree, "half": jnp.ones(2, jnp.bfloat16)})
  assert diagnostics.all_finite({"count": jnp.arange(3)})

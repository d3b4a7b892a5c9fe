"""experiments.evaluate: returns match the trace, masks end at the first done, nothing is
overwritten, and a missing or failing renderer is a note, never an error."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from tiny import tiny

import envs
from experiments import evaluate
from ppo_jax import checkpoint, normalization, train
from ppo_jax.rollout import Trace, env_step, first_episodes, summarize, trace_episodes
from ppo_jax.step import make_env_and_networks

TRACE_FIELDS = (
  "observations",
  "actions",
  "rewards",
  "terminations",
  "truncations",
  "alive",
  "saturated",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A tiny trained builtin/cartpole_balance run (episode_length 100)."""
  path = tmp_path_factory.mktemp("evaluate") / "run"
  train(tiny(), path, show_progress=False)
  return path


def read(out):
  results = json.loads((out / evaluate.RETURNS_FILE).read_text())
  with np.load(out / evaluate.TRACE_FILE) as npz:
    trace = {name: npz[name] for name in npz.files}
  return results, trace


def snapshot(folder):
  return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_summarize_hand_computed_trace():
  # T = 4, N = 2: env 0 terminates at step 1 (then resets), env 1 is truncated at step 3.
  trace = {
    "observations": np.zeros((4, 2, 1), np.float32),
    "actions": np.zeros((4, 2, 1), np.float32),
    "rewards": np.array([[1.0, 0.5], [2.0, 0.5], [7.0, 0.5], [7.0, 0.5]], np.float32),
    "terminations": np.array([[0, 0], [1, 0], [0, 0], [1, 0]], bool),
    "truncations": np.array([[0, 0], [0, 0], [0, 0], [0, 1]], bool),
    "alive": np.array([[1, 1], [1, 1], [0, 1], [0, 1]], bool),
    "saturated": np.array([[1.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32),
  }
  results = summarize(first_episodes(Trace(**trace)))
  assert results["returns"] == [3.0, 2.0]
  assert results["lengths"] == [2, 4]
  assert results["terminated"] == [True, False] and results["truncated"] == [False, True]
  assert results["mean_return"] == 2.5 and results["std_return"] == 0.5
  assert results["termination_rate"] == 0.5
  assert results["action_saturation"] == pytest.approx(1.5 / 6)  # alive steps only


def test_first_episodes_match_auto_resetting_envs():
  # The evaluation holds an ended env instead of resetting it; each env's first episode must
  # be what the auto-resetting envs of training give, step by step, with the same keys.
  env = envs.make("builtin/cartpole_balance", episode_length=60)
  num_episodes = 16

  def policy(obs, key):  # random pushes: the poles fall at different steps, some never
    return 2.0 * jax.random.uniform(key, (obs.shape[0], 1)) - 1.0 + 0.3 * obs[:, 1:2]

  key = jax.random.key(5)
  trace, _ = jax.jit(lambda k: trace_episodes(env, policy, k, num_episodes))(key)
  episodes = summarize(first_episodes(trace))

  reset_key, policy_key = jax.random.split(key)
  state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
  step = jax.jit(lambda s, k: env_step(env, s, policy(s.obs, k)))
  returns, lengths = np.zeros(num_episodes), np.zeros(num_episodes, int)
  alive = np.ones(num_episodes, bool)
  for step_key in jax.random.split(policy_key, env.max_episode_steps):
    state = step(state, step_key)
    returns += np.where(alive, state.reward, 0.0)
    lengths += alive
    alive &= np.asarray(state.done) == 0
  assert len(set(lengths.tolist())) > 2
  np.testing.assert_array_equal(episodes["lengths"], lengths)
  np.testing.assert_allclose(episodes["returns"], returns, rtol=1e-6)


def test_evaluation_files_agree_and_are_never_overwritten(run_dir, capsys):
  first = evaluate.main([str(run_dir), "--episodes", "3", "--deterministic"])
  out = capsys.readouterr().out
  assert first.parent == run_dir / evaluate.EVAL_DIR
  results, trace = read(first)

  T, N = 100, 3  # tiny(): episode_length 100, action_repeat 1
  assert results["max_episode_steps"] == T and results["episodes"] == N
  assert results["deterministic"] is True and results["seed"] == 0
  assert set(trace) == set(TRACE_FIELDS)
  assert trace["observations"].shape == (T, N, 4) and trace["actions"].shape == (T, N, 1)
  for name in TRACE_FIELDS[2:]:
    assert trace[name].shape == (T, N), name
  assert np.all(np.abs(trace["actions"]) <= 1.0)

  alive, done = trace["alive"], trace["terminations"] | trace["truncations"]
  lengths = np.array(results["lengths"])
  for n in range(N):
    first_done = int(np.argmax(done[:, n]))  # every first episode ends within T steps
    assert done[first_done, n]
    np.testing.assert_array_equal(alive[:, n], np.arange(T) <= first_done)
    assert lengths[n] == first_done + 1
    assert results["terminated"][n] == bool(trace["terminations"][first_done, n])
    assert results["truncated"][n] == bool(trace["truncations"][first_done, n])
  returns = np.sum(trace["rewards"] * alive, axis=0)
  assert len(results["returns"]) == N
  np.testing.assert_allclose(results["returns"], returns, rtol=1e-6)
  assert results["mean_return"] == pytest.approx(np.mean(returns))
  assert results["std_return"] == pytest.approx(np.std(returns))

  assert [line.split(":")[0] for line in out.splitlines()[:N]] == [f"episode {i}" for i in range(N)]
  assert "mean return" in out
  note = [line for line in out.splitlines() if line.startswith("video:")]
  assert len(note) == 1 and "rendering is unavailable" in note[0] and "built-in" in note[0]
  assert results["video"] is None and "built-in" in results["video_note"]

  kept = snapshot(first)
  second = evaluate.main([str(run_dir), "--episodes", "3", "--deterministic"])
  assert second != first and second.parent == first.parent
  assert snapshot(first) == kept
  again, _ = read(second)
  assert again["returns"] == results["returns"]  # same seed, deterministic actions


def test_a_failing_renderer_is_a_note(run_dir, capsys, monkeypatch):
  # Pretend the built-in task may render: its core has no `render`, so rendering raises.
  monkeypatch.setattr(evaluate, "rendering_unavailable", lambda *args: None)
  out_dir = evaluate.main([str(run_dir), "--episodes", "2", "--seed", "1"])
  results, trace = read(out_dir)
  assert results["deterministic"] is False and results["seed"] == 1
  assert trace["rewards"].shape == (100, 2)
  assert results["video"] is None and results["video_note"].startswith("the renderer failed")
  out = capsys.readouterr().out
  assert "video: rendering is unavailable: the renderer failed (AttributeError" in out
  assert sorted(p.name for p in out_dir.iterdir()) == ["returns.json", "trace.npz"]


@pytest.mark.slow  # ~30 s on two CPU cores (Brax's import and compile): too long for the default suite
def test_a_brax_run_dir(tmp_path, capsys):
  # An untrained policy in the layout `train` writes: training Brax takes far longer.
  cfg = tiny(env="brax/inverted_pendulum", episode_length=20)
  env, networks = make_env_and_networks(cfg)
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(cfg.to_dict()))
  params = networks.init(jax.random.PRNGKey(0))
  checkpoint.save_policy(
    run,
    cfg,
    env.observation_size,
    env.action_size,
    params.policy,
    normalization.init(env.observation_size),
  )
  results, trace = read(evaluate.main([str(run), "--episodes", "2"]))
  assert trace["observations"].shape == (20, 2, env.observation_size)
  np.testing.assert_allclose(
    results["returns"], np.sum(trace["rewards"] * trace["alive"], axis=0), rtol=1e-6
  )
  out = capsys.readouterr().out
  # A video where MUJOCO_GL lets MuJoCo render here, else the note saying why not.
  assert "video of episode 0:" in out or "video: rendering is unavailable:" in out


def test_policies_around_the_largest_kl_update_evaluate_on_the_same_states(run_dir, capsys):
  outs = [
    evaluate.main([str(run_dir / "largest_kl" / name), "--episodes", "2", "--no-video"])
    for name in ("before", "after")
  ]
  (before, before_trace), (after, after_trace) = (read(out) for out in outs)
  np.testing.assert_array_equal(before_trace["observations"][0], after_trace["observations"][0])
  assert before["episodes"] == after["episodes"] == 2
  assert "mean return" in capsys.readouterr().out

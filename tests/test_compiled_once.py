"""No silent recompilation: the train state keeps its avals (shape, dtype, weak type) across
chunks and evaluations, and nothing is compiled after the programs compiled ahead of the loop,
for a built-in task, a Brax generalized env, a Brax MJX env and a Playground env.

A leaf whose weak type changed across a chunk (MJX's `Data.time`, mujoco#2306; jax#3163) once
made a lazily jitted evaluator trace and compile again at its second call, silently, for
minutes on a GPU. The programs are now compiled ahead; these tests keep it that way.
"""

from __future__ import annotations

import dataclasses

import jax
import pytest
from tiny import compilations, tiny

from ppo_jax.runner import Runner

# A Brax and a Playground model small enough to compile in a minute on two cores.
CASES = {
  "builtin": tiny(),
  "brax_generalized": tiny(env="brax/inverted_pendulum", env_backend="generalized"),
  "brax_mjx": tiny(env="brax/inverted_pendulum", env_backend="mjx"),
  "playground": tiny(env="playground/CartpoleBalance"),
}
SLOW = ("brax_generalized", "brax_mjx", "playground")  # 44-62 s each on 2 cores
MJX = ("brax_mjx", "playground")  # MJX relies on rank promotion


def avals(tree) -> list[tuple]:
  """(path, shape, dtype, weak type) of every leaf: what a compiled program is specialized to."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return [(jax.tree_util.keystr(p), x.shape, x.dtype, jax.typeof(x).weak_type) for p, x in leaves]


@pytest.mark.parametrize(
  "case", [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else []) for name in CASES]
)
def test_nothing_compiles_after_the_programs_and_the_state_keeps_its_avals(case, tmp_path):
  cfg = dataclasses.replace(CASES[case], num_evals=3)  # two chunks
  with jax.numpy_rank_promotion("allow" if case in MJX else "raise"):
    runner = Runner(cfg, tmp_path / "run", resume=False, show_progress=False)
    runner.compile()
  jax.clear_caches()  # so that anything run eagerly from here on compiles, and counts
  seen = []
  with compilations() as compiled:
    runner.start()
    seen.append((avals(runner.state), avals(runner.eval_key)))
    # Three evaluations (one before training), two chunks, a checkpoint after each chunk.
    runner.learn(lambda record: seen.append((avals(runner.state), avals(runner.eval_key))))
  assert compiled == []
  assert len(seen) == 4
  assert seen[0][0] == avals(runner.abstract_state)  # what the chunk was compiled for
  for after in seen[1:]:
    changed = [(b, a) for b, a in zip(seen[0][0], after[0], strict=True) if b != a]
    assert not changed, f"{case}: avals changed across a chunk and an evaluation: {changed[:3]}"
    assert after[1] == seen[0][1]
  assert runner.checkpoints.latest_step() == 2 * cfg.iterations_per_chunk

"""Checkpoints of the whole training state (orbax), and the final policy of a run.

A checkpoint holds everything a run needs to continue as if it had never stopped: params,
optimizer state, observation statistics, adaptive learning rate, RNG key, every env's state,
the iteration counter, plus the host's own small state (the evaluation key, the config).
Orbax writes each one to a temporary directory and renames it when complete, so a kill
during a write never leaves a checkpoint that `latest` would pick up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from ppo_jax.config import PPOConfig
from ppo_jax.normalization import RunningStatistics

CHECKPOINTS = "checkpoints"
POLICY = "policy"


def manager(run_dir: str | Path, keep: int) -> ocp.CheckpointManager:
  """Checkpoint manager of a run directory, keeping the last `keep` checkpoints."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, create=True, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(
    Path(run_dir).absolute() / CHECKPOINTS, options=options, item_names=("state", "host")
  )


def _nonempty_leaves(tree: Any) -> dict[str, Any]:
  """Leaves with data, keyed by position: orbax refuses zero-size arrays, which MJX states
  hold (e.g. `data.act` of a model without activations). Their shape alone restores them."""
  return {f"{i:06d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree)) if np.size(leaf)}


def save(mngr: ocp.CheckpointManager, step: int, state: Any, host: dict[str, Any]) -> None:
  """Saves `state` (any pytree of arrays) as checkpoint `step`; `host` is JSON-able."""
  mngr.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(_nonempty_leaves(state)), host=ocp.args.JsonSave(host)
    ),
  )
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, like: Any) -> tuple[Any, dict[str, Any]] | None:
  """The latest complete checkpoint as (state, host), `state` shaped like `like`; None if none."""
  step = mngr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _nonempty_leaves(like))
  restored = mngr.restore(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()),
  )
  leaves, treedef = jax.tree.flatten(like)
  data = restored.state
  leaves = [data[f"{i:06d}"] if np.size(leaf) else leaf for i, leaf in enumerate(leaves)]
  return jax.tree.unflatten(treedef, leaves), restored.host


def save_policy(
  run_dir: str | Path,
  cfg: PPOConfig,
  observation_size: int,
  action_size: int,
  policy_params: Any,
  normalizer: RunningStatistics,
) -> Path:
  """Writes what `load_policy` needs: the policy params, the normalizer and the sizes."""
  directory = Path(run_dir) / POLICY
  directory.mkdir(parents=True, exist_ok=True)
  payload = {"policy": policy_params, "normalizer": normalizer}
  (directory / "params.msgpack").write_bytes(serialization.to_bytes(jax.device_get(payload)))
  spec = {
    "config": cfg.to_dict(),
    "observation_size": observation_size,
    "action_size": action_size,
  }
  (directory / "policy.json").write_text(json.dumps(spec, indent=2))
  return directory


def load_policy_payload(run_dir: str | Path) -> tuple[PPOConfig, int, int, Any, RunningStatistics]:
  """(config, observation_size, action_size, policy params, normalizer) of a saved policy."""
  directory = Path(run_dir) / POLICY
  if not (directory / "policy.json").exists():
    raise FileNotFoundError(f"{run_dir} has no saved policy ({directory}/policy.json)")
  spec = json.loads((directory / "policy.json").read_text())
  cfg = PPOConfig(**spec["config"])
  raw = serialization.msgpack_restore((directory / "params.msgpack").read_bytes())
  normalizer = RunningStatistics(**{k: np.asarray(v) for k, v in raw["normalizer"].items()})
  return cfg, spec["observation_size"], spec["action_size"], raw["policy"], normalizer

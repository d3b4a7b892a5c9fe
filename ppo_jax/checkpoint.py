"""Checkpoints of the whole training state (orbax), and the saved policies of a run.

A checkpoint holds everything a run needs to continue as if it had never stopped: params,
optimizer state, observation statistics, adaptive learning rate, RNG key, every env's state,
the iteration counter, plus the host's own small state (the evaluation key, the config).
Orbax writes each one to a temporary directory (`<step>.orbax-checkpoint-tmp`) and renames
it when complete, so a kill during a write never leaves a checkpoint that `latest` would
pick up; the next `Checkpointer` of the run directory deletes such leftovers. A save that
fails (a full disk) removes its partial write and says which earlier checkpoint is intact.

Saves run in the background (orbax's asynchronous checkpointing): orbax copies the state to host
memory before `save` returns (see `_host_copy`), so the write overlaps the next chunk of
training, which may take the state's device buffers. The next `save`, and `wait`, first wait
for the one in flight and raise its failure.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from ppo_jax import normalization
from ppo_jax.config import PPOConfig
from ppo_jax.networks import make_actor_critic, make_policy
from ppo_jax.normalization import RunningStatistics

CHECKPOINTS = "checkpoints"
POLICY = "policy"


def _nonempty_leaves(tree: Any) -> dict[str, Any]:
  """Leaves with data, keyed by position: orbax refuses zero-size arrays, which MJX states
  hold (e.g. `data.act` of a model without activations). Their shape alone restores them."""
  return {f"{i:06d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree)) if np.size(leaf)}


def _host_copy(leaf: Any) -> Any:
  """What `save` hands orbax for `leaf`: a numpy leaf copied (orbax writes host arrays as they
  are, in the background), a device array as it is, with no copy and nothing compiled.

  The next chunk takes (donates) the state's device buffers while orbax is still writing. That
  is safe because orbax has the arrays on the host before `save` returns (orbax-checkpoint
  0.11.36): `CheckpointManager.save` calls the checkpointer's `save` (checkpoint_manager.py:1516),
  which runs the handlers' `async_save` to its end in the caller's thread
  (_src/checkpointers/async_checkpointer.py:560, awaiting the handler at :498) and only then
  starts the background commit (:571); the pytree handler awaits every array handler's
  `serialize` there (_src/handlers/base_pytree_checkpoint_handler.py:721); with no byte limit
  on device-to-host transfers every array is "prioritized"
  (_src/serialization/jax_array_handlers.py:434), and prioritized arrays go to the host at once
  (:365) through `replica_slices.transfer_arrays_to_host`, which "blocks until completion"
  (_src/serialization/replica_slices.py:403) by `np.asarray` of each shard (:483). On a GPU
  that is a copy in host memory; on the CPU it is a view of the buffer, and a buffer with a
  view cannot be donated: the chunk then writes its result to new buffers. A test
  (test_checkpoint.py) holds orbax to this.
  """
  return leaf if isinstance(leaf, jax.Array) else np.array(leaf, copy=True)


class Checkpointer:
  """The checkpoints of a run directory: saved in the background, the last `keep` kept.

  Args:
    run_dir: the run directory; checkpoints go to run_dir/checkpoints.
    keep: how many of the latest checkpoints are kept.
    asynchronous: whether `save` returns before the write is done.
  """

  def __init__(self, run_dir: str | Path, keep: int, asynchronous: bool = True):
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=True,
      enable_async_checkpointing=asynchronous,
      cleanup_tmp_directories=True,  # partial writes of a run that was killed
    )
    self.manager = ocp.CheckpointManager(
      Path(run_dir).absolute() / CHECKPOINTS, options=options, item_names=("state", "host")
    )
    self.directory = self.manager.directory
    self._in_flight: tuple[int, set[threading.Thread]] | None = None

  def latest_step(self) -> int | None:
    """The latest complete checkpoint (after the one in flight, if any, is done)."""
    self.wait()
    return self.manager.latest_step()

  def save(self, step: int, state: Any, host: dict[str, Any]) -> None:
    """Starts saving `state` (any pytree of arrays) as checkpoint `step`; `host` is JSON-able.

    Raises:
      OSError: this or the previous save failed, with the same errno; the message names the
        step, the path and the latest checkpoint left intact ("disk full while saving
        checkpoint 4 to ...; the previous checkpoint 2 is intact"). The partial write is
        removed first.
    """
    self.wait()
    self._in_flight = (step, set(threading.enumerate()))
    items = jax.tree.map(_host_copy, _nonempty_leaves(state))
    args = ocp.args.Composite(state=ocp.args.StandardSave(items), host=ocp.args.JsonSave(host))
    self._guard(lambda: self.manager.save(step, args=args))

  def wait(self) -> None:
    """Waits for the save in flight; raises its failure as `save` describes."""
    if self._in_flight is not None:
      self._guard(self.manager.wait_until_finished)
      self._in_flight = None

  def _guard(self, call: Callable[[], Any]) -> None:
    step, threads = self._in_flight
    try:
      call()
    except Exception as error:
      self._in_flight = None
      # Orbax raises the first failed write while the others still run in its threads: they
      # must end before the partial checkpoint is removed, or they would write it back.
      _join(set(threading.enumerate()) - threads, timeout=30.0)
      _remove_partial(self.directory, step)
      cause = _os_error(error)
      if cause is None:
        raise
      raise OSError(cause.errno, _save_failure(self.directory, step, cause)) from error

  def restore_latest(self, like: Any) -> tuple[Any, dict[str, Any]] | None:
    """The latest complete checkpoint as (state, host), `state` shaped like `like` (arrays or
    `jax.ShapeDtypeStruct`s); None if there is none.

    Arrays are read to the host, then put on the default device as a fresh state's are (not
    committed to it), so a resumed run lowers to the very program a fresh one does:
    bit-identical steps, and a hit in a persistent compilation cache.
    """
    step = self.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(_host_like, _nonempty_leaves(like))
    restored = self.manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()
      ),
    )
    leaves, treedef = jax.tree.flatten(like)
    data = jax.tree.map(jnp.asarray, restored.state)
    leaves = [
      data[f"{i:06d}"] if np.size(leaf) else jnp.zeros(np.shape(leaf), leaf.dtype)
      for i, leaf in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, leaves), restored.host


def _join(threads: set[threading.Thread], timeout: float) -> None:
  """Waits for `threads` to end, `timeout` seconds at most in all."""
  deadline = time.monotonic() + timeout
  for thread in threads:
    with contextlib.suppress(Exception):  # orbax's threads re-raise their failure at join
      thread.join(max(0.0, deadline - time.monotonic()))


def _os_error(error: BaseException | None) -> OSError | None:
  """The OSError that caused `error` (orbax may re-raise it from a worker thread), if any."""
  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, OSError) and error.errno is not None:
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def _remove_partial(directory: Any, step: int) -> None:
  """Deletes what a failed save of `step` left: its temporary directory, never a checkpoint."""
  for path in Path(directory).glob(f"{step}{ocp.utils.TMP_DIR_SUFFIX}*"):
    shutil.rmtree(path, ignore_errors=True)


def _save_failure(directory: Any, step: int, cause: OSError) -> str:
  """What failed, where, and which checkpoint a resume would continue from."""
  what = "disk full" if cause.errno in (errno.ENOSPC, errno.EDQUOT) else "could not write"
  # The complete checkpoints on disk (orbax renames each to its step when it is complete).
  steps = [int(path.name) for path in Path(directory).iterdir() if path.name.isdigit()]
  if step in steps:  # the failure came after the checkpoint was complete
    left = f"checkpoint {step} itself is complete"
  elif steps:
    left = f"the previous checkpoint {max(steps)} is intact"
  else:
    left = "there is no earlier checkpoint, so a resume starts the run over"
  reason = cause.strerror or os.strerror(cause.errno)
  return (
    f"{what} ({reason}) while saving checkpoint {step} to {Path(directory) / str(step)}; {left}"
  )


def _host_like(leaf: Any) -> Any:
  """What orbax restores `leaf` as: an array laid out as a `jax.ShapeDtypeStruct`'s sharding
  says (a run on several devices: each process reads its shards, whatever the layout that
  wrote it), else a numpy array, or a device array for extended dtypes."""
  if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is not None:
    return leaf
    return ocp.utils.to_shape_dtype_struct(leaf)
  return np.empty(np.shape(leaf), leaf.dtype)


def save_policy(
  run_dir: str | Path,
  cfg: PPOConfig,
  observation_size: int | dict[str, int],
  action_size: int,
  policy_params: Any,
  normalizer: RunningStatistics,
) -> Path:
  """Writes what `load_policy` needs: the policy params, the normalizer and the sizes.

  Of dict observations, only what the policy sees is kept: the `policy_obs_key` entry's size
  and statistics, so that the saved policy takes that entry alone.
  """
  directory = Path(run_dir) / POLICY
  directory.mkdir(parents=True, exist_ok=True)
  observation_size = normalization.entry(observation_size, cfg.policy_obs_key)
  normalizer = normalization.select(normalizer, cfg.policy_obs_key)
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


def load_policy(run_dir: str | Path, deterministic: bool = False) -> Callable[..., jax.Array]:
  """The final policy of a run, from its directory alone (normalizer included).

  Returns:
    A jittable policy(obs [..., obs_size], key=None) -> action in [-1, 1]; the mean action
    without a key (or with deterministic=True), a sample with one. Of dict observations it
    takes the entry the policy saw in training (`policy_obs_key`), as an array.
  """
  cfg, observation_size, action_size, params, normalizer = load_policy_payload(run_dir)
  networks = make_actor_critic(cfg, observation_size, action_size)
  return make_policy(networks, params, normalizer, deterministic)

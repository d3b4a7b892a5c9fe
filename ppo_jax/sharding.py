"""How a run spreads over devices: one mesh axis, over the seeds of a panel or over the envs.

A run's state has a leading seed axis (a single run is a panel of one seed). On several devices
it is laid out in one of two ways (`make_layout`):

  seeds  when the devices divide num_seeds: each device trains whole seeds, and nothing is
         exchanged between devices.
  envs   otherwise: every seed's envs are split over the devices (params, optimizer state and
         statistics replicated), and so are the samples of every minibatch and the evaluation
         envs. The math stays that of one big batch: every mean (observation statistics,
         advantage normalization, gradients, KL, every metric) is over all envs or samples,
         which XLA computes with cross-device reductions.

The programs are compiled with these shardings (`jax.jit` in/out shardings, GSPMD); inside
them, `split_envs` marks the arrays whose env or sample axis is split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppo_jax.config import PPOConfig

SEEDS = "seeds"
ENVS = "envs"


@dataclasses.dataclass(frozen=True)
class Layout:
  """A run's devices and how its state lies on them (see the module docstring)."""

  mesh: Mesh

  @property
  def axis(self) -> str:
    return self.mesh.axis_names[0]

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def per_seed(self) -> NamedSharding:
    """Arrays with a leading seed axis and nothing per env (a panel's policies)."""
    return NamedSharding(self.mesh, P(SEEDS) if self.axis == SEEDS else P())

  def state(self, state: Any) -> Any:
    """The shardings of a panel's train state (any pytree shaped like a TrainState)."""
    if self.axis == SEEDS:
      return jax.tree.map(lambda _: self.per_seed, state)
    envs = NamedSharding(self.mesh, P(None, ENVS))  # env_state leaves: [seeds, num_envs, ...]
    return jax.tree_util.tree_map_with_path(
      lambda path, _: envs if path[0].name == "env_state" else self.replicated, state
    )

  def put(self, value: np.ndarray) -> jax.Array:
    """A host value replicated on every device (of every process)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])


def make_layout(cfg: PPOConfig, devices: Sequence[jax.Device] | None = None) -> Layout | None:
  """The layout of `cfg` on `devices` (all of them by default); None for a single device.

  Raises:
    ValueError: an env count that the devices do not divide, naming the fields and the
      device count (checked before anything compiles).
  """
  devices = list(jax.devices() if devices is None else devices)
  count = len(devices)
  if count == 1:
    return None
  if cfg.num_seeds % count == 0:
    return Layout(Mesh(np.array(devices), (SEEDS,)))
  for field in ("num_envs", "batch_size", "num_eval_envs"):
    value = getattr(cfg, field)
    if value % count:
      raise ValueError(
        f"{field} ({value}) must be divisible by the device count ({count}): each device steps "
        f"an equal share of the envs, of every minibatch's samples and of the evaluation envs "
        f"(or make num_seeds ({cfg.num_seeds}) a multiple of {count} to give each device "
        "whole seeds)"
      )
  return Layout(Mesh(np.array(devices), (ENVS,)))


def mesh_context(layout: Layout | None):
  """The context to trace a run's programs in: its mesh, so that `split_envs` sees it."""
  return contextlib.nullcontext() if layout is None else jax.set_mesh(layout.mesh)


def split_envs(tree: Any, axis: int = 0) -> Any:
  """Marks `axis` of every leaf as split over the devices, inside a program traced under an
  envs layout's mesh (`jax.set_mesh`); unchanged otherwise."""
  if ENVS not in jax.sharding.get_abstract_mesh().axis_names:
    return tree
  return jax.lax.with_sharding_constraint(tree, P(*([None] * axis), ENVS))


def fetch(tree: Any) -> Any:
  """The values of a tree of arrays on this host, as numpy; arrays spread over the devices of
  several processes are gathered first (every process must call this at the same point)."""

  def one(x):
    if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(one, tree)


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  heartbeat_timeout_seconds: int = 30,
) -> bool:
  """Joins this process to a run over several processes (hosts), before anything else runs.

  With none of the first three given, JAX's own detection of a cluster (SLURM, Open MPI) is
  used where one is present; on a single machine with none given, nothing happens. CPU
  collectives go through gloo. A process that stops sending heartbeats for
  `heartbeat_timeout_seconds` makes JAX end every other process with an error naming it.

  Returns:
    Whether several processes now take part.
  """
  given = (coordinator_address, num_processes, process_id) != (None, None, None)
  cluster = any(int(os.environ.get(name, "1")) > 1 for name in CLUSTER_SIZE_VARIABLES)
  if not given and not cluster:
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address,
    num_processes,
    process_id,
    heartbeat_timeout_seconds=heartbeat_timeout_seconds,
  )
  return jax.process_count() > 1


# Environment variables by which a cluster's launcher tells each process how many there are.
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")

"""A 1-D `data` mesh over all devices of all hosts; replicated state, batch-sharded inputs."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed() -> None:
  """Calls jax.distributed.initialize() when launched multi-process (TPU pod, SLURM)."""
  try:
    jax.distributed.initialize()
  except (ValueError, RuntimeError):
    pass  # single process: nothing to coordinate


def is_chief() -> bool:
  """True on the process that writes files and summaries (process 0)."""
  return jax.process_index() == 0


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """Mesh with one axis `data` over the first num_devices devices (default: all)."""
  devices = jax.devices()
  n = num_devices or len(devices)
  if n > len(devices):
    raise ValueError(f"asked for {n} devices, only {len(devices)} available")
  return jax.sharding.Mesh(np.asarray(devices[:n]), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Host-local batch -> global jax.Array sharded along `data` (leading axis)."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh, what: str) -> None:
  n = mesh.devices.size
  if batch_size % n or batch_size % jax.process_count():
    raise ValueError(f"{what} = {batch_size} must be a multiple of the number of devices ({n}) "
                     f"and of processes ({jax.process_count()})")

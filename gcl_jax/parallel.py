"""A 1-D `data` mesh over all devices of all hosts; replicated state, batch-sharded inputs; the
multi-process start-up (`detect_launch`, `initialize_distributed`)."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from gcl_jax.types import UserError

# An explicit launch names its coordinator by flags (main.py) or by these environment variables.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
# What JAX's SLURM detection reads (jax/_src/clusters/slurm_cluster.py); srun sets them all.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")
DISTRIBUTED_CHOICES = ("auto", "on", "off")


class DistributedError(UserError, RuntimeError):
  """A multi-process launch that cannot start (missing settings, unreachable coordinator)."""


@dataclasses.dataclass(frozen=True)
class Launch:
  """How this process joins a multi-process run: `kwargs` of jax.distributed.initialize (empty:
  JAX detects the cluster itself) and `how`, the launch in words for messages."""
  how: str
  kwargs: Mapping[str, object]


def detect_launch(*, distributed: str = "auto", coordinator_address: str | None = None,
                  num_processes: int | None = None, process_id: int | None = None,
                  environ: Mapping[str, str] | None = None) -> Launch | None:
  """The multi-process launch this process is part of, or None for a single-process run.

  distributed="auto" (default) is multi-process exactly when the coordinator is named (the
  arguments or $JAX_COORDINATOR_ADDRESS, with the process count and id), when srun started more
  than one task (SLURM_STEP_NUM_TASKS > 1) or mpirun more than one rank (OMPI_COMM_WORLD_SIZE
  > 1); "on" always joins one (Cloud TPU VMs: JAX finds the other workers itself); "off" never.
  Raises DistributedError naming what is missing when a launch is detected but incomplete.
  """
  env = os.environ if environ is None else environ
  if distributed not in DISTRIBUTED_CHOICES:
    raise DistributedError(f"--distributed must be one of {list(DISTRIBUTED_CHOICES)}, got "
                           f"{distributed!r}")
  explicit = {"coordinator_address": coordinator_address or env.get(ENV_COORDINATOR),
              "num_processes": num_processes if num_processes is not None
                               else env.get(ENV_NUM_PROCESSES),
              "process_id": process_id if process_id is not None else env.get(ENV_PROCESS_ID)}
  if distributed == "off":
    if coordinator_address or num_processes is not None or process_id is not None:
      raise DistributedError("--distributed=off contradicts --coordinator_address / "
                             "--num_processes / --process_id")
    return None
  if any(v not in (None, "") for v in explicit.values()):
    return _explicit_launch(explicit)
  if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
    missing = [v for v in SLURM_VARS if v not in env]
    if missing:
      raise DistributedError(f"SLURM step of {env['SLURM_STEP_NUM_TASKS']} tasks without "
                             f"{', '.join(missing)} in the environment: start it with srun")
    return Launch(f"SLURM ({env['SLURM_NTASKS']} tasks, this one {env['SLURM_PROCID']})", {})
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return Launch(f"Open MPI ({env['OMPI_COMM_WORLD_SIZE']} ranks)", {})
  if distributed == "on":
    return Launch("JAX's cluster detection (--distributed=on)", {})
  return None


def _explicit_launch(explicit: dict) -> Launch | None:
  names = {"coordinator_address": f"--coordinator_address or ${ENV_COORDINATOR}",
           "num_processes": f"--num_processes or ${ENV_NUM_PROCESSES}",
           "process_id": f"--process_id or ${ENV_PROCESS_ID}"}
  missing = [names[k] for k, v in explicit.items() if v in (None, "")]
  if missing:
    given = ", ".join(f"{k}={v}" for k, v in explicit.items() if v not in (None, ""))
    raise DistributedError(f"multi-process launch ({given}) without {' and '.join(missing)}")
  try:
    n, i = int(explicit["num_processes"]), int(explicit["process_id"])
  except ValueError as e:
    raise DistributedError(f"num_processes and process_id must be integers, got "
                           f"{explicit['num_processes']!r} and {explicit['process_id']!r}") from e
  if n < 1 or not 0 <= i < n:
    raise DistributedError(f"process_id {i} is not in [0, num_processes={n})")
  if n == 1:
    return None
  address = str(explicit["coordinator_address"])
  return Launch(f"coordinator {address}, process {i} of {n}",
                {"coordinator_address": address, "num_processes": n, "process_id": i})


def initialize_distributed(launch: Launch | None) -> None:
  """Joins the multi-process run `launch` (jax.distributed.initialize); nothing when None.

  CPU collectives go through gloo (JAX has none by default across processes). A process other
  than 0 of an explicit launch first waits for the coordinator's port, so that a wrong address
  ends in a DistributedError naming it (XLA aborts the process on a failed connection). Raises
  DistributedError with the launch and JAX's reason when the start-up fails.
  """
  if launch is None:
    return
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info("joining a multi-process run: %s", launch.how)
  if launch.kwargs.get("process_id", 0):
    _wait_for_port(launch, str(launch.kwargs["coordinator_address"]),
                   float(launch.kwargs.get("initialization_timeout", 300)))
  try:
    jax.distributed.initialize(**launch.kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise DistributedError(f"jax.distributed.initialize() failed for the launch of {launch.how}: "
                           f"{e}") from e
  logging.info("process %d of %d (%s): %d local of %d devices", jax.process_index(),
               jax.process_count(), launch.how, jax.local_device_count(), jax.device_count())


def _wait_for_port(launch: Launch, address: str, timeout_s: float) -> None:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise DistributedError(f"coordinator address {address!r} is not host:port")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
      return
    except OSError as e:
      if time.monotonic() > deadline:
        raise DistributedError(
            f"the coordinator {address} (process 0) did not answer within {timeout_s:.0f} s for "
            f"the launch of {launch.how} ({e}): is process 0 running, and is the address one "
            "that this host can reach?") from e
      time.sleep(0.5)


def is_chief() -> bool:
  """True on the process that writes files and summaries (process 0)."""
  return jax.process_index() == 0


def agree(value: bool) -> bool:
  """Process 0's `value` on every process (`value` itself in a single-process run), for decisions
  that lead into collectives, such as whether a cache already holds a result."""
  if jax.process_count() == 1:
    return bool(value)
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(value))))


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

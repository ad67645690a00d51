"""Orbax checkpoints of the whole TrainState; the latest complete one is restored on restart.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from gcl_jax.train.state import TrainState


class Checkpointer:
  """Saves every `every_steps` steps under <workdir>/checkpoints, keeps the last `keep`."""

  def __init__(self, workdir: str, every_steps: int, keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(save_interval_steps=max(int(every_steps), 1),
                                           max_to_keep=keep, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, target: TrainState, step: int | None = None) -> TrainState:
    """Restores into the structure, shapes and shardings of `target`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError) as e:
      raise ValueError(
          f"checkpoint {self.directory}/{step} does not match the model and optimizer of this "
          f"config (different arch, width, norm, pool or optimizer?): {e}") from e

  def save(self, state: TrainState, force: bool = False) -> bool:
    step = int(jax.device_get(state.step))
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

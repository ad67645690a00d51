"""Orbax checkpoints of the whole TrainState; the latest complete one is restored on restart.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

import json

import jax
import orbax.checkpoint as ocp
from absl import logging

from gcl_jax import io
from gcl_jax.train.state import TrainState
from gcl_jax.types import UserError


class CheckpointMismatchError(UserError, ValueError):
  """A workdir's checkpoints were written under a config whose model or optimizer differ."""


class Checkpointer:
  """Saves every `every_steps` steps under <workdir>/checkpoints, keeps the last `keep`."""

  def __init__(self, workdir: str, every_steps: int, keep: int = 3):
    self.directory = io.join(io.absolute(workdir), "checkpoints")
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
      raise CheckpointMismatchError(
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


# Config keys that decide the structure of the checkpointed state: a checkpoint written under other
# values cannot be restored. Everything else may change between restarts (and is logged), e.g.
# model.dtype, model.cpu_conv, model.bn_mode or the learning rate.
STRUCTURAL_KEYS = ("model.arch", "model.width", "model.norm", "model.norm_groups", "model.pool",
                   "model.netvlad_clusters", "model.whitening_dim", "model.vgg_end",
                   "model.last_layer", "optimizer.name", "optimizer.momentum")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_compatible_config(config, workdir: str) -> None:
  """Refuses to resume a workdir whose checkpoints were written under an incompatible config.

  Raises:
    CheckpointMismatchError: naming each structural key whose value differs.
  """
  path = io.join(workdir, "config.json")
  ckpt_dir = io.join(workdir, "checkpoints")
  if not (io.exists(path) and io.isdir(ckpt_dir) and io.listdir(ckpt_dir)):
    return
  old = _flatten(io.read_json(path))
  new = _flatten(json.loads(config.to_json_best_effort()))
  changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)}
  structural = {k: v for k, v in changed.items() if k in STRUCTURAL_KEYS}
  if structural:
    lines = "\n".join(f"  {k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in structural.items())
    raise CheckpointMismatchError(f"{workdir} holds checkpoints of an incompatible config; use "
                                  f"another --workdir or the same values:\n{lines}")
  for k, (a, b) in changed.items():
    logging.warning("resuming with %s changed: %r -> %r", k, a, b)

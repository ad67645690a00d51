"""Train state (one pure pytree) and its construction: model split, optimizer, sharding."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from gcl_jax.models import build_model
from gcl_jax.train import sharding


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any  # pure nnx.State of nnx.Param
  model_state: Any  # pure nnx.State of everything else (BatchNorm statistics)
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """Static halves of the model: graph definitions for training and evaluation mode."""
  train_graphdef: Any
  eval_graphdef: Any

  def merge(self, state: TrainState, train: bool) -> nnx.Module:
    return nnx.merge(self.train_graphdef if train else self.eval_graphdef, state.params,
                     state.model_state)


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  lr = opt.learning_rate
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "step":
    if opt.decay_steps <= 0:
      raise ValueError(f"config.optimizer.decay_steps must be > 0, got {opt.decay_steps}")
    return optax.exponential_decay(lr, opt.decay_steps, opt.decay_factor, staircase=True)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, opt.warmup_steps, max(num_steps, 1))
  raise ValueError(f"unknown config.optimizer.schedule {opt.schedule!r}; "
                   "choose 'constant', 'step' or 'cosine'")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  opt = config.optimizer
  lr = learning_rate_schedule(opt, config.train.num_steps)
  if opt.name == "sgd":
    return optax.sgd(lr, momentum=opt.momentum or None)
  if opt.name == "adam":
    return optax.adam(lr)
  if opt.name == "adamw":
    return optax.adamw(lr, weight_decay=opt.weight_decay)
  raise ValueError(f"unknown config.optimizer.name {opt.name!r}; choose 'sgd', 'adam', 'adamw'")


def create_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       model: nnx.Module | None = None) -> tuple[ModelDef, TrainState]:
  """Builds the model (or takes `model`), splits it and returns a replicated TrainState."""
  model = model if model is not None else build_model(config.model, seed=config.seed)
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  train_graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.as_pure(params), nnx.as_pure(rest)
  tx = make_optimizer(config)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=rest,
                     opt_state=tx.init(params))
  state = jax.device_put(state, sharding.replicated(mesh))
  return ModelDef(train_graphdef, eval_graphdef), state


def parameter_overview(state: TrainState) -> str:
  """Table of parameter names, shapes and counts."""
  rows = []
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    rows.append(f"  {name:<55} {str(tuple(leaf.shape)):<20} {leaf.size:>10,}")
    total += leaf.size
  return "\n".join(rows + [f"  {'total':<55} {'':<20} {total:>10,}"])

"""Train state (one pure pytree) and its construction: model split, optimizer, sharding."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from gcl_jax.models import build_model, freeze, summary, weights
from gcl_jax import parallel


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
  trainable: Any = None  # pytree of bools over params (None: everything trains)


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  lr = opt.learning_rate
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "step":
    if opt.decay_steps <= 0:
      raise ValueError(f"config.optimizer.decay_steps must be > 0, got {opt.decay_steps}")
    return optax.exponential_decay(lr, opt.decay_steps, opt.decay_factor, staircase=True)
  if opt.schedule == "cosine":
    if not 0 <= opt.warmup_steps < num_steps:
      raise ValueError(f"config.optimizer.warmup_steps = {opt.warmup_steps} must be in "
                       f"[0, config.train.num_steps = {num_steps})")
    return optax.warmup_cosine_decay_schedule(0.0, lr, opt.warmup_steps, num_steps)
  raise ValueError(f"unknown config.optimizer.schedule {opt.schedule!r}; "
                   "choose 'constant', 'step' or 'cosine'")


def make_optimizer(config: ml_collections.ConfigDict,
                   trainable: Any = None) -> optax.GradientTransformation:
  """The configured optimizer; parameters where the `trainable` mask is False get no update."""
  opt = config.optimizer
  lr = learning_rate_schedule(opt, config.train.num_steps)
  if opt.name == "sgd":
    tx = optax.sgd(lr, momentum=opt.momentum or None)
  elif opt.name == "adam":
    tx = optax.adam(lr)
  elif opt.name == "adamw":
    tx = optax.adamw(lr, weight_decay=opt.weight_decay)
  else:
    raise ValueError(f"unknown config.optimizer.name {opt.name!r}; choose 'sgd', 'adam', 'adamw'")
  return tx if trainable is None else freeze.freeze_optimizer(tx, trainable)


def build_initial_model(config: ml_collections.ConfigDict) -> nnx.Module:
  """The configured model with config.model.init_checkpoint's weights when one is given."""
  return weights.import_into_state(build_model(config.model, seed=config.seed), config)


def create_train_state(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, model: nnx.Module | None = None
) -> tuple[ModelDef, TrainState, optax.GradientTransformation]:
  """Splits the model (default: `build_initial_model(config)`) into a replicated TrainState.

  Returns the graph definitions, the state and the optimizer (which leaves the layers frozen by
  config.model.last_layer untouched).
  """
  model = model if model is not None else build_initial_model(config)
  m = config.model
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  freeze.set_batchnorm_mode(model, m.bn_mode, m.arch, m.last_layer)
  train_graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.as_pure(params), nnx.as_pure(rest)
  trainable = None
  if m.last_layer is not None:
    trainable = freeze.trainable_mask(params, m.arch, m.last_layer)
  tx = make_optimizer(config, trainable)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=rest,
                     opt_state=tx.init(params))
  state = jax.device_put(state, parallel.replicated(mesh))
  return ModelDef(train_graphdef, eval_graphdef, trainable), state, tx


def parameter_overview(model_def: ModelDef, state: TrainState) -> str:
  """Table of parameter names, shapes, counts and trainable/frozen."""
  return summary.parameter_table(state.params, model_def.trainable)

"""The jitted, data-parallel GCL train step and the descriptor extraction step."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from gcl_jax import losses
from gcl_jax.train import sharding
from gcl_jax.train.state import ModelDef, TrainState


def make_train_step(model_def: ModelDef, config: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns step(state, batch) -> (state, metrics); batch = {im0, im1, label} sharded on `data`.

  Both images of a pair go through the same network in two calls (shared weights), as in the
  authors' siamese network, so BatchNorm normalises each branch with its own statistics. The
  loss is the mean of the per-pair losses over the global batch.
  """
  loss_fn_per_pair = losses.get_loss(config.loss.name)
  margin = float(config.loss.margin)

  def loss_fn(params, model_state, batch):
    model = nnx.merge(model_def.train_graphdef, params, model_state)
    d0 = model(batch["im0"])
    d1 = model(batch["im1"])
    per_pair = loss_fn_per_pair(d0, d1, batch["label"], margin)
    new_model_state = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))
    return jnp.mean(per_pair), (per_pair, new_model_state)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    (loss, (per_pair, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.model_state, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "null_loss_fraction": jnp.mean((per_pair == 0).astype(jnp.float32)),
        "grad_norm": optax.global_norm(grads),
    }
    return TrainState(step=state.step + 1, params=params, model_state=model_state,
                      opt_state=opt_state), metrics

  rep = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(rep, sharding.batch_sharded(mesh)),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def make_embed_step(model_def: ModelDef, mesh: jax.sharding.Mesh) -> Callable:
  """Returns embed(params, model_state, images) -> descriptors, in evaluation mode."""

  def embed(params, model_state, images):
    return nnx.merge(model_def.eval_graphdef, params, model_state)(images)

  rep = sharding.replicated(mesh)
  return jax.jit(embed, in_shardings=(rep, rep, sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))

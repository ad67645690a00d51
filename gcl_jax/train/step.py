"""The jitted, data-parallel train step (GCL, contrastive, triplet) and the embedding step."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from gcl_jax import losses, parallel
from gcl_jax.data.normalize import normalize_on_device
from gcl_jax.train.state import ModelDef, TrainState


def example_loss(config: ml_collections.ConfigDict) -> Callable:
  """per_example(model, batch) -> (B,) losses of config.loss.name.

  Pair losses ("gcl", "contrastive") take {im0, im1, label}: both images of a pair go through
  the same network in two calls (shared weights), as in the authors' siamese network, so
  BatchNorm normalizes each branch with its own statistics. "triplet" takes {images: (B, K, ...)}
  with K = 2 + num_negatives images per tuple (query, positive, negatives), embedded in one call
  as the MSLS toolkit does, with the toolkit's distance margin sqrt(loss.mining.margin).
  """
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  if losses.uses_mining(config.loss.name):
    margin = math.sqrt(float(config.loss.mining.margin))

    def per_tuple(model, batch):
      images = normalize_on_device(batch["images"], mean, std)
      b, k = images.shape[:2]
      d = model(images.reshape(b * k, *images.shape[2:])).reshape(b, k, -1)
      return losses.triplet_loss(d[:, 0], d[:, 1], d[:, 2:], margin)

    return per_tuple
  pair_loss = losses.get_loss(config.loss.name)
  margin = float(config.loss.margin)

  def per_pair(model, batch):
    d0 = model(normalize_on_device(batch["im0"], mean, std))
    d1 = model(normalize_on_device(batch["im1"], mean, std))
    return pair_loss(d0, d1, batch["label"], margin)

  return per_pair


def make_train_step(model_def: ModelDef, config: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns step(state, batch) -> (state, metrics); batch sharded on `data` (`example_loss`).

  Images are float32 (normalized by the input pipeline) or uint8 (normalized here, bit-identically,
  with config.data.mean / std; see `gcl_jax.data.normalize`). The loss is the mean of the
  per-example losses over the global batch.
  """
  per_example = example_loss(config)

  def loss_fn(params, model_state, batch):
    model = nnx.merge(model_def.train_graphdef, params, model_state)
    per_pair = per_example(model, batch)
    new_model_state = nnx.as_pure(nnx.state(model, nnx.Not(nnx.Param)))
    return jnp.mean(per_pair), (per_pair, new_model_state)

  accum = int(config.train.grad_accum_steps)
  n_dev = mesh.devices.size
  if accum < 1 or config.train.batch_size % (accum * n_dev):
    raise ValueError(f"config.train.batch_size = {config.train.batch_size} must be a multiple of "
                     f"config.train.grad_accum_steps ({accum}) x devices ({n_dev})")
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def micro_batches(x):
    # (B, ...) sharded over devices -> (accum, B / accum, ...), each micro-batch taking an equal
    # slice of every device's shard so no data moves between devices.
    m = x.shape[0] // (n_dev * accum)
    x = x.reshape(n_dev, accum, m, *x.shape[1:]).swapaxes(0, 1)
    return x.reshape(accum, n_dev * m, *x.shape[3:])

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    if accum == 1:
      (loss, (per_pair, model_state)), grads = grad_fn(state.params, state.model_state, batch)
    else:
      # Gradient accumulation: mean of the micro-batch gradients == gradient of the batch mean.
      def body(carry, micro):
        grads_sum, model_state = carry
        (loss, (per_pair, model_state)), grads = grad_fn(state.params, model_state, micro)
        return (jax.tree.map(jnp.add, grads_sum, grads), model_state), (loss, per_pair)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, model_state), (losses_, per_pair) = jax.lax.scan(
          body, (zeros, state.model_state), jax.tree.map(micro_batches, batch))
      grads = jax.tree.map(lambda g: g / accum, grads)
      loss = jnp.mean(losses_)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "null_loss_fraction": jnp.mean((per_pair == 0).astype(jnp.float32)),
        "grad_norm": optax.tree.norm(grads),
    }
    return TrainState(step=state.step + 1, params=params, model_state=model_state,
                      opt_state=opt_state), metrics

  rep = parallel.replicated(mesh)
  return jax.jit(step, in_shardings=(rep, parallel.batch_sharded(mesh)),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def make_embed_step(model_def: ModelDef, mesh: jax.sharding.Mesh, mean: Sequence[float],
                    std: Sequence[float]) -> Callable:
  """Returns embed(params, model_state, images) -> descriptors, in evaluation mode.

  uint8 images are normalized with `mean` / `std` first; float32 images are used as they are.
  """
  mean, std = tuple(mean), tuple(std)

  def embed(params, model_state, images):
    model = nnx.merge(model_def.eval_graphdef, params, model_state)
    return model(normalize_on_device(images, mean, std))

  rep = parallel.replicated(mesh)
  return jax.jit(embed, in_shardings=(rep, rep, parallel.batch_sharded(mesh)),
                 out_shardings=parallel.batch_sharded(mesh))

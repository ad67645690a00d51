"""Generalized Contrastive Loss (GCL) and the binary contrastive baseline.

Pure jnp; no knowledge of models or the training loop.

For descriptors a, b (already L2-normalised) and a graded label psi in [0, 1]:

    d = || a - b + eps ||_2           (eps = 1e-6 added to every coordinate, as PyTorch's
                                       PairwiseDistance does; keeps the gradient finite at a == b)
    L = psi * d^2 / 2 + (1 - psi) * max(margin - d, 0)^2 / 2

With binary labels psi in {0, 1} this is Hadsell et al.'s contrastive loss ("1 = similar").
"""

from __future__ import annotations

import jax.numpy as jnp

PAIRWISE_EPS = 1e-6


def pairwise_distance(x0: jnp.ndarray, x1: jnp.ndarray, eps: float = PAIRWISE_EPS) -> jnp.ndarray:
  """Row-wise ||x0 - x1 + eps||_2 over the last axis (PyTorch PairwiseDistance semantics)."""
  diff = x0 - x1 + eps
  return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def gcl_loss(x0: jnp.ndarray, x1: jnp.ndarray, label: jnp.ndarray, margin: float = 0.5) -> jnp.ndarray:
  """Per-pair Generalized Contrastive Loss.

  Args:
    x0, x1: (B, D) descriptors of the two images of each pair.
    label: (B,) graded similarity psi in [0, 1].
    margin: tau; negatives further apart than tau contribute nothing.

  Returns:
    (B,) float32 loss of each pair (reduce with a mean in the train step).
  """
  x0 = jnp.asarray(x0, jnp.float32)
  x1 = jnp.asarray(x1, jnp.float32)
  label = jnp.asarray(label, jnp.float32)
  d = pairwise_distance(x0, x1)
  hinge = jnp.maximum(margin - d, 0.0)
  return label * 0.5 * d * d + (1.0 - label) * 0.5 * hinge * hinge


def contrastive_loss(x0: jnp.ndarray, x1: jnp.ndarray, label: jnp.ndarray,
                     margin: float = 0.5) -> jnp.ndarray:
  """Binary contrastive loss: GCL restricted to labels in {0, 1} (label 1 = same place)."""
  label = jnp.asarray(label, jnp.float32)
  return gcl_loss(x0, x1, (label > 0.5).astype(jnp.float32), margin)


LOSSES = {"gcl": gcl_loss, "contrastive": contrastive_loss}


def get_loss(name: str):
  """Looks up a loss by its config name."""
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
  return LOSSES[name]

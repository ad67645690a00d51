"""Global pooling of NHWC feature maps into descriptors."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


class GeM(nnx.Module):
  """Generalized-mean pooling with a learnable exponent p (shape (1,), as the authors' code).

  y_c = ( mean_{h,w} max(x_{h,w,c}, eps)^p )^(1/p)
  """

  def __init__(self, p: float = 3.0, eps: float = 1e-6):
    self.p = nnx.Param(jnp.full((1,), p, jnp.float32))
    self.eps = eps

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    p = self.p[...].astype(jnp.float32)
    x = jnp.maximum(x.astype(jnp.float32), self.eps)
    return jnp.mean(x ** p, axis=(1, 2)) ** (1.0 / p)


def avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def max_pool(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.max(x.astype(jnp.float32), axis=(1, 2))


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  """x / max(||x||_2, eps) over the last axis (torch.nn.functional.normalize)."""
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)

"""Place-recognition descriptor: backbone -> global pooling -> L2 normalisation."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from gcl_jax.models import pooling
from gcl_jax.models.resnet import ARCHS, ResNet

POOLS = ("gem", "avg", "max")


class DescriptorNet(nnx.Module):
  """Siamese branch of the GCL network (weights are shared by both images of a pair)."""

  def __init__(self, backbone: nnx.Module, pool: str = "gem", gem_p: float = 3.0):
    if pool not in POOLS:
      raise ValueError(f"unknown pool {pool!r}; choose one of {POOLS}")
    self.backbone = backbone
    self.pool_name = pool
    self.pool = nnx.data(pooling.GeM(gem_p) if pool == "gem" else None)

  def features(self, images: jnp.ndarray) -> jnp.ndarray:
    """Last backbone feature map, NHWC."""
    return self.backbone(images)

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    """(N, H, W, 3) preprocessed float images -> (N, D) unit-norm float32 descriptors."""
    x = self.backbone(images)
    if self.pool_name == "gem":
      x = self.pool(x)
    elif self.pool_name == "avg":
      x = pooling.avg_pool(x)
    else:
      x = pooling.max_pool(x)
    return pooling.l2_normalize(x.astype(jnp.float32))


def build_model(model_config: ml_collections.ConfigDict, seed: int = 0) -> DescriptorNet:
  """Builds the descriptor network that `model_config` (config.model) describes."""
  dtype = {"float32": None, "bfloat16": jnp.bfloat16}.get(model_config.dtype, "bad")
  if dtype == "bad":
    raise ValueError(f"config.model.dtype must be 'float32' or 'bfloat16', got {model_config.dtype!r}")
  rngs = nnx.Rngs(seed)
  if model_config.arch in ARCHS:
    backbone = ResNet(model_config.arch, width=model_config.width, norm=model_config.norm,
                      norm_groups=model_config.norm_groups, rngs=rngs, dtype=dtype)
  else:
    raise ValueError(f"unknown config.model.arch {model_config.arch!r}; "
                     f"choose one of {sorted(ARCHS)}")
  return DescriptorNet(backbone, pool=model_config.pool, gem_p=model_config.gem_p)

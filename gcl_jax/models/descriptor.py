"""Place-recognition descriptor: backbone -> global pooling [-> whitening] -> L2 normalization."""

from __future__ import annotations

from typing import Any, Iterable

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from gcl_jax.models import cpu_conv, pooling
from gcl_jax.models.resnet import ARCHS, ResNet
from gcl_jax.models.vgg import VGG16

POOLS = ("gem", "avg", "max", "netvlad")
BACKBONES = tuple(sorted(ARCHS)) + ("vgg16",)


class DescriptorNet(nnx.Module):
  """Siamese branch of the GCL network (weights are shared by both images of a pair).

  Args:
    backbone: module mapping (N, H, W, 3) images to an (N, h, w, C) feature map; it must expose
      `out_features` (C) for NetVLAD and whitening.
    pool: "gem", "avg", "max" or "netvlad".
    gem_p: initial GeM exponent.
    netvlad_clusters: number of NetVLAD clusters K (descriptor size K * C before whitening).
    whitening_dim: 0 for none; else a learned linear projection to this size before the L2.
    rngs: initialisation of NetVLAD / whitening (only needed for those).
    dtype: compute dtype of NetVLAD's assignment conv and of the whitening projection.
  """

  def __init__(self, backbone: nnx.Module, pool: str = "gem", gem_p: float = 3.0, *,
               netvlad_clusters: int = 64, whitening_dim: int = 0,
               rngs: nnx.Rngs | None = None, dtype=None):
    if pool not in POOLS:
      raise ValueError(f"unknown pool {pool!r}; choose one of {POOLS}")
    self.backbone = backbone
    self.pool_name = pool
    if pool in ("netvlad",) or whitening_dim:
      if rngs is None:
        rngs = nnx.Rngs(0)
      channels = getattr(backbone, "out_features", None)
      if channels is None:
        raise ValueError("pool='netvlad' and whitening need backbone.out_features")
    if pool == "gem":
      self.pool = nnx.data(pooling.GeM(gem_p))
      dim = getattr(backbone, "out_features", None)
    elif pool == "netvlad":
      if netvlad_clusters < 1:
        raise ValueError(f"netvlad_clusters must be >= 1, got {netvlad_clusters}")
      self.pool = nnx.data(pooling.NetVLAD(channels, netvlad_clusters, rngs=rngs, dtype=dtype))
      dim = self.pool.out_features
    else:
      self.pool = nnx.data(None)
      dim = getattr(backbone, "out_features", None)
    if whitening_dim:
      if whitening_dim < 0:
        raise ValueError(f"whitening_dim must be >= 0, got {whitening_dim}")
      self.whiten = nnx.data(pooling.Whitening(dim, whitening_dim, rngs=rngs, dtype=dtype))
      dim = whitening_dim
    else:
      self.whiten = nnx.data(None)
    self.out_features = dim

  def features(self, images: jnp.ndarray) -> jnp.ndarray:
    """Last backbone feature map, NHWC."""
    return self.backbone(images)

  def pooled(self, images: jnp.ndarray) -> jnp.ndarray:
    """Pooled descriptor before whitening and the final L2 normalization (float32)."""
    x = self.backbone(images)
    if self.pool_name in ("gem", "netvlad"):
      x = self.pool(x)
    elif self.pool_name == "avg":
      x = pooling.avg_pool(x)
    else:
      x = pooling.max_pool(x)
    return x.astype(jnp.float32)

  def init_netvlad(self, image_batches: Iterable[Any], *, per_image: int = 100,
                   num_samples: int = 50000, seed: int = 0) -> None:
    """Initialises NetVLAD from k-means of local features of training images (pytorch-NetVLAD's
    `cluster` mode: 100 random feature-map locations per image, 50,000 in all, i.e. 500 images).
    Call it on a model in eval mode (`model.eval()`): in train mode BatchNorm would use batch
    statistics and update its running statistics.

    Args:
      image_batches: iterable of (N, H, W, 3) preprocessed image batches; iteration stops once
        `num_samples` features are collected.
      per_image: local features sampled per image.
      num_samples: features given to k-means.
      seed: sampling and k-means seed.
    """
    if self.pool_name != "netvlad":
      raise ValueError(f"init_netvlad needs pool='netvlad', this model has {self.pool_name!r}")
    rng = np.random.default_rng(seed)
    feats, total = [], 0
    for images in image_batches:
      fmap = np.asarray(self.backbone(jnp.asarray(images)), np.float32)
      n, h, w, c = fmap.shape
      flat = fmap.reshape(n, h * w, c)
      for i in range(n):
        take = rng.choice(h * w, min(per_image, h * w), replace=False)
        feats.append(flat[i, take])
        total += len(take)
      if total >= num_samples:
        break
    if not feats:
      raise ValueError("init_netvlad got no images")
    self.pool.init_from_features(np.concatenate(feats)[:num_samples], num_samples=num_samples,
                                 seed=seed)

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    """(N, H, W, 3) preprocessed float images -> (N, D) unit-norm float32 descriptors."""
    x = self.pooled(images)
    if self.whiten is not None:
      x = self.whiten(x)
    return pooling.l2_normalize(x.astype(jnp.float32))


def build_model(model_config: ml_collections.ConfigDict, seed: int = 0) -> DescriptorNet:
  """Builds the descriptor network that `model_config` (config.model, every key of
  configs/default.py) describes."""
  dtype = {"float32": None, "bfloat16": jnp.bfloat16}.get(model_config.dtype, "bad")
  if dtype == "bad":
    raise ValueError(f"config.model.dtype must be 'float32' or 'bfloat16', got {model_config.dtype!r}")
  rngs = nnx.Rngs(seed)
  if model_config.arch in ARCHS:
    backbone = ResNet(model_config.arch, width=model_config.width, norm=model_config.norm,
                      norm_groups=model_config.norm_groups, rngs=rngs, dtype=dtype)
  elif model_config.arch == "vgg16":
    backbone = VGG16(width=model_config.width, end=model_config.vgg_end,
                     rngs=rngs, dtype=dtype)
  else:
    raise ValueError(f"unknown config.model.arch {model_config.arch!r}; "
                     f"choose one of {BACKBONES}")
  if model_config.cpu_conv:
    cpu_conv.set_conv(backbone)  # XLA's own convolutions except on CPU
  return DescriptorNet(backbone, pool=model_config.pool, gem_p=model_config.gem_p,
                       netvlad_clusters=int(model_config.netvlad_clusters),
                       whitening_dim=int(model_config.whitening_dim),
                       rngs=rngs, dtype=dtype)

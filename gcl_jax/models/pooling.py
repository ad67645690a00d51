"""Global pooling of NHWC feature maps into descriptors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
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


def kmeans(x: np.ndarray, k: int, *, iters: int = 50, seed: int = 0) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding in NumPy (float64): (n, d) -> (k, d) centroids.

  Empty clusters are re-seeded with the point farthest from its centroid.

  Raises:
    ValueError: if `x` is not 2-D or has fewer rows than `k`.
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"kmeans expects (n, d) features, got shape {x.shape}")
  n = x.shape[0]
  if n < k:
    raise ValueError(f"kmeans needs at least k={k} features, got {n}")
  rng = np.random.default_rng(seed)
  sq = np.sum(x * x, axis=1)
  centroids = np.empty((k, x.shape[1]))
  centroids[0] = x[rng.integers(n)]
  d2 = np.maximum(sq - 2 * x @ centroids[0] + centroids[0] @ centroids[0], 0)
  for j in range(1, k):  # k-means++
    total = d2.sum()
    i = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
    centroids[j] = x[i]
    d2 = np.minimum(d2, np.maximum(sq - 2 * x @ centroids[j] + centroids[j] @ centroids[j], 0))
  for _ in range(iters):
    dist = sq[:, None] - 2 * x @ centroids.T + np.sum(centroids ** 2, axis=1)[None]
    assign = np.argmin(dist, axis=1)
    new = np.zeros_like(centroids)
    np.add.at(new, assign, x)
    counts = np.bincount(assign, minlength=k)
    for j in np.flatnonzero(counts == 0):
      far = np.argmax(dist[np.arange(n), assign])
      new[j], counts[j] = x[far], 1
      dist[far] = 0
    new /= counts[:, None]
    if np.allclose(new, centroids):
      centroids = new
      break
    centroids = new
  return centroids


class NetVLAD(nnx.Module):
  """NetVLAD aggregation (Arandjelovic et al. 2016), as in pytorch-NetVLAD / Patch-NetVLAD.

  Local features are L2-normalized over channels, softly assigned to K clusters by a 1x1
  convolution + softmax, residuals to the centroids are summed per cluster, each cluster's
  vector is L2-normalized (intra-normalization) and the flattened (K * C) vector is L2-normalized.
  The flattening is cluster-major, like torch's `vlad.view(N, -1)` of an (N, K, C) tensor.

  Parameters: `conv` (1x1 conv C -> K, kernel (1, 1, C, K), no bias unless `vladv2`) and
  `centroids` (K, C). Initialise from data with `init_from_features`.
  """

  def __init__(self, dim: int, num_clusters: int = 64, *, vladv2: bool = False,
               normalize_input: bool = True, rngs: nnx.Rngs, dtype=None):
    self.num_clusters = num_clusters
    self.dim = dim
    self.normalize_input = normalize_input
    self.vladv2 = vladv2
    self.conv = nnx.Conv(dim, num_clusters, (1, 1), use_bias=vladv2, dtype=dtype, rngs=rngs)
    self.centroids = nnx.Param(jax.random.uniform(rngs.params(), (num_clusters, dim)))
    self.out_features = num_clusters * dim

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """(N, H, W, C) feature map -> (N, K * C) float32 unit-norm VLAD vector."""
    n, _, _, c = x.shape
    if c != self.dim:
      raise ValueError(f"NetVLAD expects {self.dim} channels, got feature map shape {x.shape}")
    if self.normalize_input:
      x = l2_normalize(x.astype(jnp.float32), 1e-12).astype(x.dtype)
    logits = self.conv(x).astype(jnp.float32).reshape(n, -1, self.num_clusters)
    a = jax.nn.softmax(logits, axis=-1)  # (N, HW, K)
    xf = x.astype(jnp.float32).reshape(n, -1, c)  # (N, HW, C)
    # sum_i a_ik (x_i - c_k) = sum_i a_ik x_i - (sum_i a_ik) c_k
    vlad = (jnp.einsum("nik,nic->nkc", a, xf, precision=jax.lax.Precision.HIGHEST)
            - jnp.sum(a, axis=1)[..., None] * self.centroids[...][None].astype(jnp.float32))
    vlad = l2_normalize(vlad)  # intra-normalization
    return l2_normalize(vlad.reshape(n, -1))

  def init_from_features(self, local_features, *, num_samples: int = 50000, iters: int = 50,
                         seed: int = 0) -> None:
    """Initialises centroids and assignment weights from k-means of local features.

    pytorch-NetVLAD's `init_params` (vladv1): centroids = k-means centres of the (L2-normalized)
    local features; conv weight = alpha * centroids / ||centroids|| with
    alpha = -log(0.01) / mean(top1 - top2 dot products), no bias.

    Args:
      local_features: (..., C) local descriptors, e.g. a backbone feature map (N, H, W, C).
      num_samples: at most this many features are sampled for k-means.
      iters: Lloyd iterations.
      seed: sampling and k-means++ seed.
    """
    feats = np.asarray(local_features, np.float64)
    if feats.shape[-1] != self.dim:
      raise ValueError(f"NetVLAD.init_from_features expects (..., {self.dim}) features, got "
                       f"shape {feats.shape}")
    feats = feats.reshape(-1, self.dim)
    if self.normalize_input:
      feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    if feats.shape[0] > num_samples:
      feats = feats[rng.choice(feats.shape[0], num_samples, replace=False)]
    clusters = kmeans(feats, self.num_clusters, iters=iters, seed=seed)
    assign = clusters / np.maximum(np.linalg.norm(clusters, axis=1, keepdims=True), 1e-12)
    dots = np.sort(assign @ feats.T, axis=0)[::-1]
    gap = float(np.mean(dots[0] - dots[1])) if self.num_clusters > 1 else 1.0
    alpha = -np.log(0.01) / max(gap, 1e-12)
    self.centroids[...] = jnp.asarray(clusters, jnp.float32)
    self.conv.kernel[...] = jnp.asarray((alpha * assign).T[None, None], jnp.float32)
    if self.conv.bias is not None:
      self.conv.bias[...] = jnp.zeros_like(self.conv.bias[...])


class Whitening(nnx.Module):
  """Learned linear projection D -> d after pooling (PCA-whitening layer, Patch-NetVLAD's WPCA).

  The descriptor network applies the final L2 normalization after it. `init_from_descriptors`
  sets it to PCA whitening of a descriptor sample.
  """

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=None):
    if not 0 < out_features:
      raise ValueError(f"whitening output dimension must be > 0, got {out_features}")
    self.proj = nnx.Linear(in_features, out_features, dtype=dtype, rngs=rngs)
    self.in_features, self.out_features = in_features, out_features

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.proj(x).astype(jnp.float32)

  def init_from_descriptors(self, descriptors, eps: float = 1e-9) -> None:
    """PCA whitening: y = diag(s^-1/2) U^T (x - mean) keeping the top `out_features` axes."""
    x = np.asarray(descriptors, np.float64)
    if x.ndim != 2 or x.shape[1] != self.in_features:
      raise ValueError(f"Whitening.init_from_descriptors expects (n, {self.in_features}), got "
                       f"shape {x.shape}")
    if x.shape[0] < self.out_features:
      raise ValueError(f"need at least {self.out_features} descriptors, got {x.shape[0]}")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s[: self.out_features] ** 2 / max(x.shape[0] - 1, 1)
    w = vt[: self.out_features].T / np.sqrt(var + eps)  # (D, d)
    self.proj.kernel[...] = jnp.asarray(w, jnp.float32)
    self.proj.bias[...] = jnp.asarray(-mean @ w, jnp.float32)

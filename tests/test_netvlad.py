"""NetVLAD (pytorch-NetVLAD / Patch-NetVLAD semantics), k-means initialisation, whitening."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import default
from gcl_jax.models import DescriptorNet, NetVLAD, Whitening, build_model, pooling


def _reference_netvlad(x_nchw, conv_w, centroids):
  """pytorch-NetVLAD's forward, transcribed to NumPy (float64): normalize input, 1x1 conv,
  softmax over clusters, per-cluster residual loop, intra-normalize, flatten, L2."""
  n, c = x_nchw.shape[:2]
  k = centroids.shape[0]
  x = x_nchw / np.maximum(np.linalg.norm(x_nchw, axis=1, keepdims=True), 1e-12)
  xf = x.reshape(n, c, -1)
  logits = np.einsum("kc,ncs->nks", conv_w, xf)
  a = np.exp(logits - logits.max(1, keepdims=True))
  a /= a.sum(1, keepdims=True)
  vlad = np.zeros((n, k, c))
  for j in range(k):
    residual = xf - centroids[j][None, :, None]
    vlad[:, j] = (residual * a[:, j][:, None, :]).sum(-1)
  vlad /= np.maximum(np.linalg.norm(vlad, axis=2, keepdims=True), 1e-12)
  vlad = vlad.reshape(n, -1)
  return vlad / np.linalg.norm(vlad, axis=1, keepdims=True)


def test_matches_reference_implementation():
  layer = NetVLAD(6, 5, rngs=nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, 3, 4, 6)))
  got = layer(jnp.asarray(x))
  kernel = np.asarray(layer.conv.kernel[...])[0, 0].T  # (K, C) torch conv weight
  want = _reference_netvlad(np.transpose(x, (0, 3, 1, 2)), kernel,
                            np.asarray(layer.centroids[...]))
  assert got.shape == (2, 30)
  np.testing.assert_allclose(got, want, atol=2e-6)
  # intra-normalization: each cluster block has norm 1/sqrt(K)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(got).reshape(2, 5, 6), axis=2),
                             1 / np.sqrt(5), atol=1e-6)


def test_kmeans_recovers_separated_clusters():
  rng = np.random.default_rng(0)
  centres = np.array([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [-5, -5, 0]])
  x = np.concatenate([c + 0.1 * rng.standard_normal((50, 3)) for c in centres])
  found = pooling.kmeans(x, 4, seed=1)
  order = [int(np.argmin(np.linalg.norm(found - c, axis=1))) for c in centres]
  assert sorted(order) == [0, 1, 2, 3]
  np.testing.assert_allclose(found[order], centres, atol=0.05)
  with pytest.raises(ValueError, match="k=4"):
    pooling.kmeans(x[:3], 4)


def test_init_from_features_sets_centroids_and_assignment():
  rng = np.random.default_rng(0)
  dirs = np.eye(4)[:3] * 3
  feats = np.concatenate([d + 0.05 * rng.standard_normal((40, 4)) for d in dirs])
  layer = NetVLAD(4, 3, rngs=nnx.Rngs(0))
  layer.init_from_features(feats.reshape(2, 6, 10, 4), seed=0)
  cent = np.asarray(layer.centroids[...])
  # centroids are cluster means of the L2-normalized features: close to the unit axes
  assert sorted(int(np.argmax(c)) for c in cent) == [0, 1, 2]
  np.testing.assert_allclose(np.linalg.norm(cent, axis=1), 1.0, atol=0.01)
  w = np.asarray(layer.conv.kernel[...])[0, 0].T  # (K, C)
  alpha = np.linalg.norm(w, axis=1)
  np.testing.assert_allclose(alpha, alpha[0], rtol=1e-5)  # alpha * unit-norm centroids
  np.testing.assert_allclose(w / alpha[:, None], cent / np.linalg.norm(cent, axis=1)[:, None],
                             atol=1e-5)
  # soft assignment is then nearly hard: each feature goes to its own cluster
  x = jnp.asarray(feats[None, :, None, :] / np.linalg.norm(feats, axis=1)[None, :, None, None])
  a = jax.nn.softmax(layer.conv(x)[0, :, 0], axis=-1)
  assert float(jnp.mean(jnp.max(a, axis=-1))) > 0.9
  with pytest.raises(ValueError, match="4"):
    layer.init_from_features(np.zeros((10, 5)))


def test_whitening_init_gives_identity_covariance():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6)) + 3.0
  w = Whitening(6, 4, rngs=nnx.Rngs(0))
  w.init_from_descriptors(x)
  y = np.asarray(w(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(np.cov(y.T), np.eye(4), atol=1e-3)


class _TinyBackbone(nnx.Module):
  def __init__(self):
    self.conv = nnx.Conv(3, 8, (3, 3), strides=(4, 4), rngs=nnx.Rngs(0))
    self.out_features = 8

  def __call__(self, x):
    return jax.nn.relu(self.conv(x))


def test_descriptor_net_netvlad_with_whitening():
  model = DescriptorNet(_TinyBackbone(), pool="netvlad", netvlad_clusters=4, whitening_dim=16,
                        rngs=nnx.Rngs(0))
  assert model.pool.out_features == 32 and model.out_features == 16
  x = jax.random.normal(jax.random.key(0), (20, 16, 16, 3))
  model.init_netvlad([x[:10], x[10:]], per_image=8, num_samples=120)
  model.whiten.init_from_descriptors(np.asarray(model.pooled(x)))
  d = model(x)
  assert d.shape == (20, 16)
  np.testing.assert_allclose(jnp.linalg.norm(d, axis=1), 1.0, atol=1e-5)


def test_build_model_netvlad_with_whitening_shapes():
  cfg = default.get_config().model
  cfg.arch, cfg.pool, cfg.netvlad_clusters, cfg.whitening_dim = "vgg16", "netvlad", 64, 4096
  model = nnx.eval_shape(lambda: build_model(cfg))
  params = nnx.state(model, nnx.Param)
  assert params["pool"]["centroids"].shape == (64, 512)
  assert params["pool"]["conv"]["kernel"].shape == (1, 1, 512, 64)
  assert params["whiten"]["proj"]["kernel"].shape == (32768, 4096)
  out = jax.eval_shape(lambda x: build_model(cfg)(x),
                       jax.ShapeDtypeStruct((1, 480, 640, 3), jnp.float32))
  assert out.shape == (1, 4096)

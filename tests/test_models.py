"""GeM golden (G2), torchvision-compatible ResNet shapes and parameter counts, descriptors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import default
from gcl_jax.models import GeM, ResNet, build_model, l2_normalize


def test_gem_golden(data_dir):
  g = json.loads((data_dir / "golden_loss_gem.json").read_text())
  x = jnp.arange(24, dtype=jnp.float32).reshape(2, 3, 2, 2) / 10 - 0.3  # NCHW
  x = jnp.transpose(x, (0, 2, 3, 1))
  gem = GeM(3.0)
  np.testing.assert_allclose(gem(x), g["GeM_out"], atol=1e-6)
  graphdef, params = nnx.split(gem, nnx.Param)

  def total(p):
    return nnx.merge(graphdef, p)(x).sum()

  dp = jax.grad(total)(params)["p"][...]
  np.testing.assert_allclose(dp, np.ravel(g["GeM_dp"]), rtol=1e-5)


def test_l2_normalize():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("arch,count,channels", [
    ("resnet18", 11176512, 512), ("resnet34", 21284672, 512), ("resnet50", 23508032, 2048)])
def test_resnet_parameter_counts_match_torchvision(arch, count, channels):
  """torchvision's counts without the fc layer; abstract init only (no memory for weights)."""
  model = nnx.eval_shape(lambda: ResNet(arch, rngs=nnx.Rngs(0)))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == count
  assert model.out_features == channels


def test_resnet50_gem_trainable_parameters_match_authors(data_dir):
  g = json.loads((data_dir / "golden_net_structure.json").read_text())
  expected = [v["n_params_trainable"] for k, v in g.items()
              if k.startswith("resnet50") and "n_params_trainable" in v][0]
  cfg = default.get_config().model
  model = nnx.eval_shape(lambda: build_model(cfg))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == expected == 23508033


def test_feature_map_is_stride_32_like_torchvision():
  model = ResNet("resnet18", width=8, norm="group", norm_groups=4, rngs=nnx.Rngs(0))
  out = jax.eval_shape(model, jnp.zeros((1, 480, 640, 3)))
  assert out.shape == (1, 15, 20, 64)
  out = model(jnp.zeros((2, 65, 97, 3)))  # odd sizes round up like PyTorch's padding
  assert out.shape == (2, 3, 4, 64)


@pytest.mark.parametrize("pool", ["gem", "avg", "max"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_descriptors_are_unit_norm(pool, norm):
  cfg = default.get_config().model
  cfg.arch, cfg.width, cfg.norm, cfg.norm_groups, cfg.pool = "resnet18", 8, norm, 4, pool
  model = build_model(cfg)
  model.eval()
  d = model(jax.random.normal(jax.random.key(0), (3, 64, 96, 3)))
  assert d.shape == (3, 64) and d.dtype == jnp.float32
  np.testing.assert_allclose(jnp.linalg.norm(d, axis=1), 1.0, atol=1e-5)


def test_unknown_arch_is_a_clear_error():
  cfg = default.get_config().model
  cfg.arch = "resnet51"
  with pytest.raises(ValueError, match="resnet51"):
    build_model(cfg)

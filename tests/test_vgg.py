"""VGG-16 features (torchvision layout, incl. pool5) and its use in the descriptor network."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import default
from gcl_jax.models import VGG16, build_model, vgg


def test_child_indices_match_torchvision():
  assert vgg.NUM_CHILDREN == 31
  assert vgg.CONV_CHILD_INDEX == (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
  assert vgg.POOL_CHILD_INDEX == (4, 9, 16, 23, 30)


def test_full_size_shapes_and_parameter_count(data_dir):
  g = json.loads((data_dir / "golden_net_structure.json").read_text())["vgg16_last_layer=None"]
  cfg = default.get_config().model
  cfg.arch = "vgg16"
  model = nnx.eval_shape(lambda: build_model(cfg))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n == g["n_params_trainable"] == 14714689  # incl. GeM p
  assert model.backbone.out_features == g["feature_length"] == 512
  assert len(model.backbone.convs) == 13
  x = jax.ShapeDtypeStruct((1, 480, 640, 3), jnp.float32)
  out = jax.eval_shape(lambda x: build_model(cfg).backbone(x), x)
  assert out.shape == (1, 15, 20, 512)  # golden (1, 512, 15, 20) NCHW
  assert jax.eval_shape(lambda x: build_model(cfg)(x), x).shape == (1, 512)


def test_pooling_floors_odd_sizes_like_torch():
  out = jax.eval_shape(lambda x: VGG16(width=4, rngs=nnx.Rngs(0))(x),
                       jax.ShapeDtypeStruct((1, 65, 97, 3), jnp.float32))
  assert out.shape == (1, 2, 3, 32)
  x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
  np.testing.assert_array_equal(vgg.max_pool_2x2(x)[0, :, :, 0], [[6, 8], [16, 18]])


def test_narrow_vgg_descriptor_is_unit_norm_and_padding_is_1():
  cfg = default.get_config().model
  cfg.arch, cfg.width = "vgg16", 4
  model = build_model(cfg)
  d = model(jax.random.normal(jax.random.key(0), (2, 64, 96, 3)))
  assert d.shape == (2, 32)
  np.testing.assert_allclose(jnp.linalg.norm(d, axis=1), 1.0, atol=1e-5)
  conv = model.backbone.convs[0]
  assert conv.kernel.shape == (3, 3, 3, 4) and conv.bias.shape == (4,)
  assert conv.padding == ((1, 1), (1, 1))


def test_conv5_3_end_drops_last_relu_and_pool5():
  model = VGG16(width=4, end="conv5_3", rngs=nnx.Rngs(0))
  out = model(jnp.ones((1, 32, 32, 3)))
  assert out.shape == (1, 2, 2, 32)
  assert float(jnp.min(out)) < 0  # no final ReLU

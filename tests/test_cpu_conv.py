"""cpu_conv: values and input/weight gradients equal to lax.conv_general_dilated's."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from gcl_jax.models import cpu_conv

DN = ("NHWC", "HWIO", "NHWC")
TOL = 1e-4


def _inputs(n, h, w, cin, k, cout, groups=1, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((k, k, cin // groups, cout)) / np.sqrt(k * k * cin),
                       jnp.float32)
  return x, kernel


def _value_and_grads(conv, x, kernel, strides, padding, groups=1):
  """Output, d(sum(out * probe))/dx and /dkernel for a fixed random probe."""

  def f(x, kernel):
    return conv(x, kernel, strides, padding, dimension_numbers=DN, feature_group_count=groups)

  out, vjp = jax.vjp(f, x, kernel)
  probe = jnp.asarray(np.random.default_rng(1).standard_normal(out.shape), jnp.float32)
  dx, dk = vjp(probe)
  return out, dx, dk


def _assert_close(a, b, what):
  scale = max(1.0, float(jnp.max(jnp.abs(b))))
  err = float(jnp.max(jnp.abs(a - b))) / scale
  assert err < TOL, f"{what}: max relative-to-scale error {err:.2e} >= {TOL}"


# (kernel, stride): ResNet's 1x1 (projection, stride-2 downsample), 3x3 and 7x7 stem.
CASES = list(itertools.product((1, 3, 7), (1, 2)))


@pytest.mark.parametrize("k,stride", CASES)
def test_patch_conv_matches_lax(k, stride):
  """The patch path itself (forced), explicit symmetric padding k // 2, as resnet._conv."""
  x, kernel = _inputs(2, 9, 11, 5, k, 6)
  pad = ((k // 2, k // 2), (k // 2, k // 2))
  forced = lambda x, w, s, p, **_: cpu_conv.patch_conv(x, w, tuple(s), p)
  got = _value_and_grads(forced, x, kernel, (stride, stride), pad)
  want = _value_and_grads(lax.conv_general_dilated, x, kernel, (stride, stride), pad)
  for g, w, what in zip(got, want, ("output", "input gradient", "weight gradient")):
    assert g.shape == w.shape, what
    _assert_close(g, w, f"k={k} stride={stride} {what}")


@pytest.mark.parametrize("k,stride", CASES)
@pytest.mark.parametrize("groups", (1, 32))
def test_dispatch_matches_lax(k, stride, groups):
  """The drop-in function on the shapes it routes either way, groups 1 and 32 (fallback)."""
  x, kernel = _inputs(2, 8, 8, 32, k, 32, groups=groups)
  pad = ((k // 2, k // 2), (k // 2, k // 2))
  got = _value_and_grads(cpu_conv.conv_general_dilated, x, kernel, (stride, stride), pad, groups)
  want = _value_and_grads(lax.conv_general_dilated, x, kernel, (stride, stride), pad, groups)
  for g, w, what in zip(got, want, ("output", "input gradient", "weight gradient")):
    _assert_close(g, w, f"k={k} stride={stride} groups={groups} {what}")


def test_string_padding_and_other_layouts():
  x, kernel = _inputs(1, 7, 7, 4, 3, 8)
  for padding in ("SAME", "VALID"):
    got = _value_and_grads(cpu_conv.conv_general_dilated, x, kernel, (2, 2), padding)
    want = _value_and_grads(lax.conv_general_dilated, x, kernel, (2, 2), padding)
    for g, w in zip(got, want):
      _assert_close(g, w, f"padding={padding}")
  # NCHW / OIHW is not the patch path's layout: it must fall through to lax unchanged.
  x_nchw, k_oihw = x.transpose(0, 3, 1, 2), kernel.transpose(3, 2, 0, 1)
  out = cpu_conv.conv_general_dilated(x_nchw, k_oihw, (1, 1), "SAME")
  _assert_close(out, lax.conv_general_dilated(x_nchw, k_oihw, (1, 1), "SAME"), "NCHW")


def test_im2col_matches_conv():
  x, kernel = _inputs(2, 10, 9, 3, 7, 4)
  pad = ((3, 3), (3, 3))
  patches = cpu_conv.im2col(x, (7, 7), (2, 2), pad)
  out = patches @ kernel.reshape(-1, 4)
  _assert_close(out, lax.conv_general_dilated(x, kernel, (2, 2), pad, dimension_numbers=DN),
                "im2col @ kernel")


def test_routing():
  pads1, pads3 = ((0, 0), (0, 0)), ((1, 1), (1, 1))
  assert cpu_conv.use_patch_weight_grad((8, 56, 56, 64), (1, 1, 64, 256), (1, 1), pads1)
  assert cpu_conv.use_patch_weight_grad((8, 7, 7, 512), (3, 3, 512, 512), (1, 1), pads3)
  assert not cpu_conv.use_patch_weight_grad((8, 56, 56, 64), (3, 3, 64, 64), (1, 1), pads3)


def test_conv_for_platform():
  assert cpu_conv.conv_for_platform("cpu") is cpu_conv.conv_general_dilated
  assert cpu_conv.conv_for_platform("gpu") is lax.conv_general_dilated
  assert cpu_conv.conv_for_platform("TPU") is lax.conv_general_dilated
  with pytest.raises(ValueError, match="unknown platform"):
    cpu_conv.conv_for_platform("abacus")


def test_nnx_conv_train_gradients_match():
  """As wired into nnx.Conv (the way resnet._conv would): same loss and parameter gradients."""
  x, _ = _inputs(2, 8, 8, 3, 1, 1)

  def grads(fn):
    layers = [nnx.Conv(3, 8, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                       conv_general_dilated=fn, rngs=nnx.Rngs(0)),
              nnx.Conv(8, 16, (1, 1), use_bias=False, conv_general_dilated=fn,
                       rngs=nnx.Rngs(1))]
    model = nnx.Sequential(*layers)
    graphdef, params = nnx.split(model)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(x) ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)

  (l0, g0), (l1, g1) = grads(lax.conv_general_dilated), grads(cpu_conv.conv_general_dilated)
  _assert_close(l1, l0, "loss")
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    _assert_close(a, b, "parameter gradient")


def test_set_conv_replaces_every_conv():
  model = nnx.Sequential(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)),
                         nnx.Conv(4, 4, (1, 1), rngs=nnx.Rngs(1)))
  assert cpu_conv.set_conv(model, cpu_conv.conv_general_dilated) == 2
  assert all(layer.conv_general_dilated is cpu_conv.conv_general_dilated
             for layer in model.layers)

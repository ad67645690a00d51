"""A drop-in `conv_general_dilated` whose weight gradient is im2col + one matmul (for CPUs).

On CPU, XLA's weight gradient of a convolution (the "backward filter" convolution) is slower
than its forward pass and than PyTorch's (measured on 2 cores: 4x PyTorch's time on 1x1
convolutions), while forward passes and input gradients run at parity. This module keeps XLA's
forward convolution and its input gradient, and computes the weight gradient as

    patches = im2col(x)                         # (N, Ho, Wo, kh * kw * Cin), strided slices
    dW      = patches^T @ dY                    # one dot_general over N * Ho * Wo

which XLA:CPU runs as a single large GEMM. It is used only where it was measured to be faster
(`use_patch_weight_grad`: 1x1 convolutions, kxk convolutions whose output is tiny);
every other call is passed unchanged to `jax.lax.conv_general_dilated`. It is selected per
platform by `conv_for_platform`: only "cpu" gets it; GPUs and TPUs keep XLA's native
convolutions (cuDNN / the TPU convolution emitter are already fast there).

Wiring it into a Flax model: nnx.Conv takes the function as an argument::

    nnx.Conv(..., conv_general_dilated=cpu_conv.conv_for_platform())

or, on an already built model, `set_conv(model, cpu_conv.conv_for_platform())`. Only the
static graph definition changes; parameters and checkpoints are the same either way.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Padding = tuple[tuple[int, int], ...]
ConvFn = Callable[..., jax.Array]

# Output pixels (Ho * Wo per image) up to which a kxk (k > 1) convolution takes the patch path.
# Measured (jax 0.12, 2 CPU cores, 4 images, weight gradient alone, ResNet-50 layer shapes):
#   1x1 convolutions:            patch path 1.3-2.0x faster than XLA's (every shape tried);
#   3x3 with  7x7 outputs:       0.97-1.2x;   14x14: 0.84-1.2x;   28x28: 0.35x;   56x56: 0.15x;
#   7x7 stride-2 stem, 3 -> 64:  0.35x (im2col of 3-channel slices is memory-bound; XLA's own
#                                weight gradient of the stem is no longer the outlier it was).
# So kxk convolutions only take it when their output is tiny (ResNet's last stage at 224x224).
SMALL_SPATIAL_PIXELS = 8 * 8

_NHWC = ("NHWC", "HWIO", "NHWC")


def _as_pairs(padding: Any, x_shape: Sequence[int], w_shape: Sequence[int],
              strides: Sequence[int]) -> Padding:
  """Explicit ((lo, hi), (lo, hi)) padding from a string or a sequence of pairs."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(tuple(x_shape[1:3]), tuple(w_shape[:2]), tuple(strides),
                                     padding))
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pads) != 2:
    raise ValueError(f"expected 2 spatial padding pairs, got {padding!r}")
  return pads


def _is_nhwc(dimension_numbers: Any, lhs: jax.Array, rhs: jax.Array) -> bool:
  """True when `dimension_numbers` describe NHWC input, HWIO kernel, NHWC output."""
  if lhs.ndim != 4 or rhs.ndim != 4 or dimension_numbers is None:
    return False
  try:
    ours = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    theirs = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  except (TypeError, ValueError):
    return False
  return ours == theirs


def use_patch_weight_grad(x_shape: Sequence[int], w_shape: Sequence[int],
                          strides: Sequence[int], padding: Padding) -> bool:
  """Whether im2col + GEMM is the faster weight gradient on CPU for this NHWC/HWIO conv.

  Args:
    x_shape: (N, H, W, Cin) input shape.
    w_shape: (kh, kw, Cin, Cout) kernel shape.
    strides: (sh, sw).
    padding: explicit ((top, bottom), (left, right)).

  Returns:
    True for 1x1 convolutions and for kxk convolutions with at most SMALL_SPATIAL_PIXELS
    output pixels per image (see the measurements above SMALL_SPATIAL_PIXELS).
  """
  kh, kw = w_shape[:2]
  if kh == 1 and kw == 1:
    return True
  ho, wo = _out_hw(x_shape, w_shape, strides, padding)
  return ho * wo <= SMALL_SPATIAL_PIXELS


def _out_hw(x_shape: Sequence[int], w_shape: Sequence[int], strides: Sequence[int],
            padding: Padding) -> tuple[int, int]:
  return tuple((x_shape[1 + i] + padding[i][0] + padding[i][1] - w_shape[i]) // strides[i] + 1
               for i in range(2))


def _native(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding,
            precision: Any) -> jax.Array:
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC,
                                  precision=precision)


def im2col(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int],
           padding: Padding) -> jax.Array:
  """(N, H, W, C) -> (N, Ho, Wo, kh * kw * C) patches, ordered (kh, kw, C) like an HWIO kernel.

  Built from kh * kw strided slices of the padded input (no convolution involved), so that
  `im2col(x) @ w.reshape(-1, Cout)` equals the convolution.
  """
  kh, kw = kernel_hw
  sh, sw = strides
  if kh == 1 and kw == 1 and all(p == (0, 0) for p in padding):
    return x[:, ::sh, ::sw, :]
  ho, wo = _out_hw(x.shape, (kh, kw), strides, padding)
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  n, _, _, c = xp.shape
  cols = [lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def patch_conv(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: Padding,
               precision: Any = None) -> jax.Array:
  """NHWC/HWIO convolution (groups 1, no dilation) whose weight gradient is im2col + GEMM.

  The forward pass is `lax.conv_general_dilated`; the input gradient is XLA's own transpose of
  it. Always takes the patch path: use `conv_general_dilated` for the measured dispatch.

  Args:
    x: (N, H, W, Cin) input.
    w: (kh, kw, Cin, Cout) kernel.
    strides: (sh, sw), a tuple of ints (static).
    padding: explicit ((top, bottom), (left, right)) as tuples of ints (static).
    precision: lax precision of the forward convolution and of both gradients.

  Returns:
    (N, Ho, Wo, Cout) output.
  """
  return _native(x, w, strides, padding, precision)


def _patch_conv_fwd(x, w, strides, padding, precision):
  return _native(x, w, strides, padding, precision), (x, w)


def _patch_conv_bwd(strides, padding, precision, res, g):
  x, w = res
  _, x_vjp = jax.vjp(lambda x_: _native(x_, w, strides, padding, precision), x)
  (dx,) = x_vjp(g)
  kh, kw, cin, cout = w.shape
  patches = im2col(x, (kh, kw), strides, padding)
  k = kh * kw * cin
  dw = lax.dot_general(patches.reshape(-1, k), g.reshape(-1, cout), (((0,), (0,)), ((), ())),
                       precision=precision, preferred_element_type=jnp.float32)
  return dx, dw.reshape(kh, kw, cin, cout).astype(w.dtype)


patch_conv.defvjp(_patch_conv_fwd, _patch_conv_bwd)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None,
                         out_sharding: Any = None) -> jax.Array:
  """`jax.lax.conv_general_dilated` with a GEMM weight gradient where that is faster on CPU.

  Same signature and results as `jax.lax.conv_general_dilated`. Takes `patch_conv` for 2-D
  NHWC/HWIO convolutions without dilation, grouping, `preferred_element_type` or
  `out_sharding` whose shape passes `use_patch_weight_grad`; anything else (grouped ResNeXt
  convolutions, large 3x3 layers, other layouts) goes to `jax.lax.conv_general_dilated`.
  """
  strides = tuple(int(s) for s in window_strides)
  eligible = (
      _is_nhwc(dimension_numbers, lhs, rhs)
      and feature_group_count == 1 and batch_group_count == 1
      and all(d == 1 for d in (lhs_dilation or (1, 1)))
      and all(d == 1 for d in (rhs_dilation or (1, 1)))
      and preferred_element_type is None and out_sharding is None and len(strides) == 2)
  if eligible:
    pads = _as_pairs(padding, lhs.shape, rhs.shape, strides)
    if use_patch_weight_grad(lhs.shape, rhs.shape, strides, pads):
      return patch_conv(lhs, rhs, strides, pads, precision)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type, out_sharding=out_sharding)


def conv_for_platform(platform: str | None = None) -> ConvFn:
  """The convolution function for `platform` ("cpu", "gpu", "tpu"; None: jax.default_backend()).

  Returns this module's `conv_general_dilated` on "cpu" and `jax.lax.conv_general_dilated`
  everywhere else.
  """
  platform = (platform or jax.default_backend()).lower()
  if platform not in ("cpu", "gpu", "cuda", "rocm", "tpu", "metal"):
    raise ValueError(f"unknown platform {platform!r}; expected 'cpu', 'gpu' or 'tpu'")
  return conv_general_dilated if platform == "cpu" else lax.conv_general_dilated


def set_conv(model: nnx.Module, fn: ConvFn | None = None) -> int:
  """Makes every nnx.Conv inside `model` use `fn` (default: `conv_for_platform()`), in place.

  Call before `nnx.split` (e.g. right after building the model). Returns the number of
  convolutions changed.
  """
  fn = fn or conv_for_platform()
  count = 0
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Conv):
      module.conv_general_dilated = fn
      count += 1
  return count

"""VGG-16 convolutional trunk (torchvision `vgg16().features`), NHWC, in Flax NNX.

torchvision's `features` is a Sequential of 31 children: 13 convolutions (3x3, padding 1, with
bias), each followed by a ReLU, and 5 max-pools (2x2, stride 2, floor mode), the last one (pool5,
child 30) included, as in the authors' `vgg16(pretrained=True).features`. The output of a
480x640 image is (15, 20, 512).

The 13 convolutions are stored in `convs` (an nnx.List); `CONV_CHILD_INDEX[i]` is the index of
convolution i among the 31 torchvision children (`features.<index>.weight`, or
`backbone.<index>.weight` in the authors' checkpoints), which the weight import and the
`last_layer` freezing rule use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# torchvision cfg "D": channel counts, "M" = max-pool.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
             "M")
NUM_CHILDREN = 31  # len(vgg16().features)


def _child_indices(cfg=VGG16_CFG) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(conv child indices, max-pool child indices) of torchvision's make_layers(cfg)."""
  convs, pools, idx = [], [], 0
  for v in cfg:
    if v == "M":
      pools.append(idx)
      idx += 1
    else:
      convs.append(idx)
      idx += 2  # Conv2d, ReLU
  return tuple(convs), tuple(pools)


CONV_CHILD_INDEX, POOL_CHILD_INDEX = _child_indices()
assert CONV_CHILD_INDEX == (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
assert POOL_CHILD_INDEX == (4, 9, 16, 23, 30)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """torch MaxPool2d(2, stride=2) (floor mode, no padding), NHWC."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class VGG16(nnx.Module):
  """VGG-16 `features` (incl. pool5) -> (N, floor(H/32), floor(W/32), 8 * width).

  Args:
    width: channels of the first block; 64 is torchvision's. Every block scales with it
      (64, 128, 256, 512, 512 for width 64).
    end: "pool5" (the authors': all 31 children) or "conv5_3" (`features[:-2]`, without the
      last ReLU and pool5: the NetVLAD / Patch-NetVLAD encoder, output stride 16).
    rngs: parameter initialisation.
    dtype: compute dtype (None: float32); parameters stay float32.
  """

  def __init__(self, *, width: int = 64, end: str = "pool5", rngs: nnx.Rngs, dtype=None):
    if width < 1:
      raise ValueError(f"VGG16 width must be >= 1, got {width}")
    if end not in ("pool5", "conv5_3"):
      raise ValueError(f"VGG16 end must be 'pool5' or 'conv5_3', got {end!r}")
    self.end = end
    convs = []
    cin = 3
    for v in VGG16_CFG:
      if v == "M":
        continue
      cout = v * width // 64
      if cout < 1:
        raise ValueError(f"VGG16 width {width} gives a convolution with {cout} channels")
      # torchvision VGG init: kaiming_normal_(fan_out, relu), zero bias.
      convs.append(nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)), use_bias=True,
                            dtype=dtype,
                            kernel_init=nnx.initializers.variance_scaling(
                                2.0, "fan_out", "normal"),
                            bias_init=nnx.initializers.zeros_init(), rngs=rngs))
      cin = cout
    self.convs = nnx.List(convs)
    self.out_features = cin

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    i = 0
    last = len(self.convs) - 1
    for v in VGG16_CFG:
      if v == "M":
        if i > last and self.end == "conv5_3":
          break
        x = max_pool_2x2(x)
      else:
        x = self.convs[i](x)
        if not (i == last and self.end == "conv5_3"):
          x = jax.nn.relu(x)
        i += 1
    return x

"""ResNet / ResNeXt backbones with torchvision's architecture, NHWC, in Flax NNX.

The layout follows torchvision (v1.5: stride on the 3x3 convolution of the bottleneck) with
PyTorch's explicit symmetric padding, so that converted ImageNet weights give the same features.
The network ends at the last feature map (no average pooling, no classifier), as the authors'
`Sequential(*children()[:-2])`.

`width` scales every channel count (64 is torchvision's); `norm` selects BatchNorm (the
torchvision layers) or GroupNorm (small-batch training, e.g. the CPU demo).
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
from flax import nnx

# name -> (block, layers per stage, groups, width_per_group)
ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
}


def _norm(kind: str, channels: int, groups: int, rngs: nnx.Rngs, dtype) -> nnx.Module:
  if kind == "batch":
    # PyTorch momentum 0.1 == Flax momentum 0.9; eps 1e-5.
    return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
  if kind == "group":
    return nnx.GroupNorm(channels, num_groups=min(groups, channels), epsilon=1e-5, dtype=dtype,
                         rngs=rngs)
  raise ValueError(f"unknown norm {kind!r}; choose 'batch' or 'group'")


def _conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs, dtype, groups: int = 1):
  pad = k // 2
  return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                  feature_group_count=groups, use_bias=False, dtype=dtype,
                  kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
                  rngs=rngs)


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, cin: int, planes: int, stride: int, *, norm: str, norm_groups: int,
               groups: int, base_width: int, rngs: nnx.Rngs, dtype=None):
    del groups, base_width
    mk_norm = functools.partial(_norm, norm, groups=norm_groups, rngs=rngs, dtype=dtype)
    self.conv1 = _conv(cin, planes, 3, stride, rngs, dtype)
    self.bn1 = mk_norm(planes)
    self.conv2 = _conv(planes, planes, 3, 1, rngs, dtype)
    self.bn2 = mk_norm(planes)
    self.downsample = nnx.data(
        nnx.List([_conv(cin, planes, 1, stride, rngs, dtype), mk_norm(planes)])
        if stride != 1 or cin != planes else None)

  def __call__(self, x):
    identity = x
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.downsample is not None:
      identity = self.downsample[1](self.downsample[0](x))
    return jax.nn.relu(y + identity)


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int, *, norm: str, norm_groups: int,
               groups: int, base_width: int, rngs: nnx.Rngs, dtype=None):
    mk_norm = functools.partial(_norm, norm, groups=norm_groups, rngs=rngs, dtype=dtype)
    width = int(planes * (base_width / 64.0)) * groups
    cout = planes * self.expansion
    self.conv1 = _conv(cin, width, 1, 1, rngs, dtype)
    self.bn1 = mk_norm(width)
    self.conv2 = _conv(width, width, 3, stride, rngs, dtype, groups=groups)
    self.bn2 = mk_norm(width)
    self.conv3 = _conv(width, cout, 1, 1, rngs, dtype)
    self.bn3 = mk_norm(cout)
    self.downsample = nnx.data(
        nnx.List([_conv(cin, cout, 1, stride, rngs, dtype), mk_norm(cout)])
        if stride != 1 or cin != cout else None)

  def __call__(self, x):
    identity = x
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.downsample is not None:
      identity = self.downsample[1](self.downsample[0](x))
    return jax.nn.relu(y + identity)


def max_pool_3x3_s2(x: jnp.ndarray) -> jnp.ndarray:
  """torch MaxPool2d(3, stride=2, padding=1): padding with -inf, NHWC."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                               ((0, 0), (1, 1), (1, 1), (0, 0)))


class ResNet(nnx.Module):
  """ResNet/ResNeXt trunk: conv1, bn1, relu, maxpool, layer1..layer4 -> (N, H/32, W/32, C)."""

  def __init__(self, arch: str = "resnet50", *, width: int = 64, norm: str = "batch",
               norm_groups: int = 32, rngs: nnx.Rngs, dtype=None):
    if arch not in ARCHS:
      raise ValueError(f"unknown ResNet arch {arch!r}; choose one of {sorted(ARCHS)}")
    block_name, layers, groups, width_per_group = ARCHS[arch]
    block = BasicBlock if block_name == "basic" else Bottleneck
    base_width = width_per_group
    self.conv1 = _conv(3, width, 7, 2, rngs, dtype)
    self.bn1 = _norm(norm, width, norm_groups, rngs, dtype)
    cin = width
    stages = []
    for i, n in enumerate(layers):
      planes = width * 2**i
      blocks = []
      for j in range(n):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block(cin, planes, stride, norm=norm, norm_groups=norm_groups, groups=groups,
                            base_width=base_width, rngs=rngs, dtype=dtype))
        cin = planes * block.expansion
      stages.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.out_features = cin

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    x = max_pool_3x3_s2(x)
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for blk in stage:
        x = blk(x)
    return x

"""Generates the PyTorch parity goldens used by tests/test_torch_parity.py and test_weights.py.

NOT run in CI (it needs torch, which is never a dependency of gcl-jax). Regenerate with a
separate Python 3.11 environment:

    python3.11 -m venv ../torchref
    ../torchref/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy safetensors
    ../torchref/bin/python tests/data/make_torch_goldens.py

Writes into tests/data/:
  torch_golden_<name>.safetensors  state dicts in the authors' GCL format (`backbone.<child>.*`,
      `pool.p`, incl. BatchNorm buffers and int64 `num_batches_tracked`) of networks with
      torchvision's real layer structure but narrow channels (width 8 instead of 64), random
      weights (seed 0) and BatchNorm running statistics taken from one batch;
      For resnext101_32x8d the 4-D conv weights are left out: `seeded_conv_weight(key, shape)`
      regenerates them (keys and shapes in the npz entry `resnext101_32x8d_seeded_shapes`);
  torch_golden_io.npz  the input batch `images` (2, 3, 64, 96) NCHW, a fixed projection `w`
      and per model `<name>_desc` (eval-mode descriptors backbone -> GeM(p=3) -> L2) and
      `<name>_dp` = d(sum(desc * w[:, :D]))/dp of GeM's p; `<name>_desc64`, `<name>_dp64` the same
      computed in float64; `resnet18_train_desc` and `resnet18_train_bn1_running_{mean,var}`:
      one forward pass in training mode (batch statistics) and the updated running statistics;
  torch_key_shapes.json  {arch: {torchvision state-dict key: shape}} of the FULL-size
      torchvision models (built on the meta device, no weights).
"""

from __future__ import annotations

import copy
import json
import zlib
import pathlib

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

OUT = pathlib.Path(__file__).resolve().parent
WIDTH = 8  # stem channels (torchvision: 64)


class GeM(nn.Module):
  """The authors' GeM (src/networks.py)."""

  def __init__(self, p: float = 3.0, eps: float = 1e-6):
    super().__init__()
    self.p = nn.Parameter(torch.ones(1) * p)
    self.eps = eps

  def forward(self, x):
    return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p),
                        (x.size(-2), x.size(-1))).pow(1. / self.p)


class BaseNet(nn.Module):
  """The authors' BaseNet: backbone -> pool -> squeeze -> L2 (src/networks.py)."""

  def __init__(self, backbone: nn.Module, pool: nn.Module):
    super().__init__()
    self.backbone = backbone
    self.pool = pool

  def forward(self, x):
    x = self.pool(self.backbone(x)).squeeze(-1).squeeze(-1)
    return F.normalize(x, p=2, dim=1)


class _LayerMaker:
  """Attributes torchvision.models.ResNet._make_layer reads, with a configurable stem width."""

  def __init__(self, width: int, groups: int = 1, width_per_group: int = 64):
    self.inplanes = width
    self.dilation = 1
    self.groups = groups
    self.base_width = width_per_group
    self._norm_layer = nn.BatchNorm2d


def seeded_conv_weight(key: str, shape) -> np.ndarray:
  """Kaiming-normal (fan_out) weight that is a pure function of (key, shape), so that a test
  can regenerate it instead of storing it (tests/test_torch_parity.py has the same function)."""
  rng = np.random.default_rng(zlib.crc32(key.encode()))
  fan_out = shape[0] * int(np.prod(shape[2:]))
  return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_out)).astype(np.float32)


def narrow_resnet_backbone(block, layers, width: int, groups: int = 1,
                           width_per_group: int = 64) -> nn.Sequential:
  """torchvision ResNet children[:-2] (conv1, bn1, relu, maxpool, layer1..4) at stem `width`."""
  maker = _LayerMaker(width, groups, width_per_group)
  stages = [tv_resnet.ResNet._make_layer(maker, block, width * 2**i, n, stride=1 if i == 0 else 2)
            for i, n in enumerate(layers)]
  net = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1), *stages)
  for m in net.modules():  # torchvision's init
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
  return net


def narrow_vgg16_features(width: int) -> nn.Sequential:
  cfg = [v if v == "M" else v * width // 64 for v in tv_vgg.cfgs["D"]]
  feats = tv_vgg.make_layers(cfg, batch_norm=False)
  for m in feats.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      nn.init.normal_(m.bias, 0, 0.05)
  return feats


def calibrate_batchnorm(net: nn.Module, images: torch.Tensor, gen: torch.Generator) -> None:
  """Running stats from one batch (so activations stay O(1)), then random affine parameters."""
  bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
  for m in bns:
    m.momentum = 1.0
  net.train()
  with torch.no_grad():
    net(images)
    for m in bns:
      m.momentum = 0.1
      m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
      m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
      m.num_batches_tracked.fill_(7)
  net.eval()


def main():
  torch.manual_seed(0)
  gen = torch.Generator().manual_seed(0)
  images = torch.randn(2, 3, 64, 96, generator=gen)
  calib = torch.randn(4, 3, 64, 96, generator=gen)
  w = torch.randn(2, 2048, generator=gen)
  io = {"images": images.numpy(), "w": w.numpy()}
  backbones = {
      "resnet18": narrow_resnet_backbone(tv_resnet.BasicBlock, [2, 2, 2, 2], WIDTH),
      "resnet50": narrow_resnet_backbone(tv_resnet.Bottleneck, [3, 4, 6, 3], WIDTH),
      "vgg16": narrow_vgg16_features(WIDTH),
      # ResNeXt-101 32x8d at stem width 8 (grouped 3x3 convolutions with 1 channel per group):
      # its 4-D conv weights (5 MB) are not stored but regenerated by seeded_conv_weight.
      "resnext101_32x8d": narrow_resnet_backbone(tv_resnet.Bottleneck, [3, 4, 23, 3], WIDTH,
                                                 groups=32, width_per_group=8),
  }
  for name, backbone in backbones.items():
    net = BaseNet(backbone, GeM(3.0))
    seeded = name.startswith("resnext")
    if seeded:
      with torch.no_grad():
        for key, v in net.state_dict().items():
          if v.ndim == 4:
            v.copy_(torch.from_numpy(seeded_conv_weight(key, tuple(v.shape))))
    calibrate_batchnorm(net, calib, gen)
    desc = net(images)
    d = desc.shape[1]
    loss = (desc * w[:, :d]).sum()
    (dp,) = torch.autograd.grad(loss, [net.pool.p])
    io[f"{name}_desc"] = desc.detach().numpy()
    io[f"{name}_dp"] = dp.numpy()
    # float64 reference: separates float32 rounding (both sides) from real differences.
    net64 = copy.deepcopy(net).double()
    desc64 = net64(images.double())
    (dp64,) = torch.autograd.grad((desc64 * w[:, :d].double()).sum(), [net64.pool.p])
    io[f"{name}_desc64"] = desc64.detach().numpy()
    io[f"{name}_dp64"] = dp64.numpy()
    sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if name == "resnet18":
      # The authors' training mode: BatchNorm normalizes with the batch statistics of one
      # branch call and updates its running statistics (momentum 0.1, unbiased variance).
      net_train = copy.deepcopy(net).train()
      with torch.no_grad():
        io[f"{name}_train_desc"] = net_train(images).numpy()
      io[f"{name}_train_bn1_running_mean"] = net_train.backbone[1].running_mean.numpy()
      io[f"{name}_train_bn1_running_var"] = net_train.backbone[1].running_var.numpy()
    if seeded:
      io[f"{name}_seeded_shapes"] = np.array(json.dumps(
          {k: list(v.shape) for k, v in sd.items() if v.ndim == 4}))
      sd = {k: v for k, v in sd.items() if v.ndim != 4}
    path = OUT / f"torch_golden_{name}.safetensors"
    safetensors.torch.save_file(sd, str(path))
    print(f"{path.name}: {len(sd)} keys, {path.stat().st_size / 1e6:.2f} MB, "
          f"desc {tuple(desc.shape)}")
  np.savez_compressed(OUT / "torch_golden_io.npz", **io)

  shapes = {}
  with torch.device("meta"):
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "resnext101_32x8d", "vgg16"):
      m = getattr(torchvision.models, arch)()
      shapes[arch] = {k: list(v.shape) for k, v in m.state_dict().items()}
  (OUT / "torch_key_shapes.json").write_text(json.dumps(shapes, indent=0) + "\n")
  print("torch_key_shapes.json:", {k: len(v) for k, v in shapes.items()},
        f"torch {torch.__version__}, torchvision {torchvision.__version__}")


if __name__ == "__main__":
  main()

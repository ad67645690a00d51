"""Freezing by the authors' `last_layer` rule and BatchNorm modes.

Authors (src/factory.py:54-73): `layers` = number of backbone children (VGG-16 features: 31;
ResNets without avgpool/fc: 8 = conv1, bn1, relu, maxpool, layer1..layer4). `last_layer` None:
everything trains. Otherwise VGG: `last_layer <- 8 * last_layer - 2` (an off-by-one: with 1,
conv5_1 = child 24 stays frozen), ResNets unchanged, and children with index
`< layers - last_layer` get `requires_grad = False`. Parameters outside the backbone (GeM p,
NetVLAD, whitening) always train.

    vgg16     1 -> children 25-30 (conv5_2, conv5_3); 2 -> 17-30; 3 -> 9-30
    resnet*   1 -> layer4; 2 -> layer3-4; 3 -> layer2-4

Frozen parameters must get NO update: `freeze_optimizer(tx, mask)` wraps any optax optimizer
with `optax.multi_transform` so frozen leaves get `set_to_zero()` (plain `optax.masked` would
pass their raw gradients through as updates).

BatchNorm. The authors only switch off gradients: the network stays in `train()` mode, so every
BatchNorm layer, frozen or not, normalizes with the statistics of the current branch batch and
updates its running statistics (bn_mode "train", the faithful default). "frozen" uses the
running statistics everywhere during training too (no statistics updates; the usual choice for
fine-tuning with tiny batches); "frozen_layers" does that only for BatchNorm layers inside
frozen children. Apply with `set_batchnorm_mode(model, mode, arch, last_layer)` AFTER
`model.train()` (which resets every BatchNorm to batch statistics) and before splitting the
train graph definition.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import nnx

from gcl_jax.models import vgg
from gcl_jax.models.resnet import ARCHS as RESNET_ARCHS

RESNET_CHILDREN = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
BN_MODES = ("train", "frozen", "frozen_layers")


def num_children(arch: str) -> int:
  """Number of children of the authors' backbone Sequential."""
  if arch == "vgg16":
    return vgg.NUM_CHILDREN
  if arch in RESNET_ARCHS:
    return 8
  raise ValueError(f"unknown arch {arch!r} for freezing; choose vgg16 or one of "
                   f"{sorted(RESNET_ARCHS)}")


def first_trainable_child(arch: str, last_layer: int | None) -> int:
  """Index of the first backbone child that trains (0 when last_layer is None)."""
  layers = num_children(arch)
  if last_layer is None:
    return 0
  last_layer = int(last_layer)
  if last_layer < 0:
    raise ValueError(f"last_layer must be None or >= 0, got {last_layer}")
  if arch == "vgg16":
    last_layer = 8 * last_layer - 2
  return max(layers - last_layer, 0)


def _key_str(k) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def child_index(path: tuple[str, ...], arch: str) -> int | None:
  """Backbone child index of a parameter path ('backbone', ...); None outside the backbone."""
  if not path or path[0] != "backbone":
    return None
  if len(path) < 2:
    raise ValueError(f"unexpected backbone parameter path {'.'.join(path)}")
  if arch == "vgg16":
    if path[1] != "convs":
      raise ValueError(f"unexpected VGG16 parameter path {'.'.join(path)}")
    return vgg.CONV_CHILD_INDEX[int(path[2])]
  if path[1] not in RESNET_CHILDREN:
    raise ValueError(f"unexpected ResNet parameter path {'.'.join(path)}")
  return RESNET_CHILDREN[path[1]]


def _params_tree(model_or_params: Any) -> Any:
  if isinstance(model_or_params, nnx.Module):
    return nnx.as_pure(nnx.state(model_or_params, nnx.Param))
  return model_or_params


def trainable_mask(model_or_params: Any, arch: str, last_layer: int | None) -> Any:
  """Pytree of bools (True = trains) with the structure of the optimizer's params.

  Args:
    model_or_params: a DescriptorNet (its `nnx.as_pure(nnx.state(model, nnx.Param))` is used,
      i.e. the trainer's TrainState.params) or any params pytree whose paths start with
      'backbone' / 'pool' / 'whiten'.
    arch: config.model.arch.
    last_layer: the authors' `--last_layer` (None: train everything).
  """
  start = first_trainable_child(arch, last_layer)

  def leaf(path, _):
    idx = child_index(tuple(_key_str(k) for k in path), arch)
    return idx is None or idx >= start

  return jax.tree_util.tree_map_with_path(leaf, _params_tree(model_or_params))


def trained_children(arch: str, last_layer: int | None) -> list[int]:
  """Indices of the backbone children that train (golden_net_structure.json's lists)."""
  return list(range(first_trainable_child(arch, last_layer), num_children(arch)))


def freeze_optimizer(tx: optax.GradientTransformation, mask: Any) -> optax.GradientTransformation:
  """`tx` for parameters where mask is True, exactly zero updates (and no state) elsewhere."""
  labels = jax.tree.map(lambda m: "train" if m else "freeze", mask)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def set_batchnorm_mode(model: nnx.Module, mode: str, arch: str | None = None,
                       last_layer: int | None = None) -> nnx.Module:
  """Sets `use_running_average` of BatchNorm layers for training (see the module docstring).

  "train" leaves the model as it is (call it after `model.train()`: batch statistics,
  running-statistics updates, the authors' behaviour); "frozen" makes every BatchNorm use and
  keep its running statistics; "frozen_layers" only those in children frozen by `last_layer`.
  Returns `model` (modified in place).
  """
  if mode not in BN_MODES:
    raise ValueError(f"unknown config.model.bn_mode {mode!r}; choose one of {BN_MODES}")
  if mode == "train":
    return model
  start = first_trainable_child(arch, last_layer) if mode == "frozen_layers" else None
  for path, module in nnx.iter_graph(model):
    if not isinstance(module, nnx.BatchNorm):
      continue
    if mode == "frozen":
      module.use_running_average = True
    else:
      idx = child_index(tuple(str(p) for p in path) + ("_",), arch)
      if idx is not None and idx < start:
        module.use_running_average = True
  return model

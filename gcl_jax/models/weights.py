"""Import of PyTorch weights (torchvision, the authors' GCL checkpoints) into the NNX model.

Accepted key layouts (a leading `module.` from DataParallel is stripped everywhere):
  * torchvision: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
    `layerX.Y.convZ.weight`, `layerX.Y.downsample.{0,1}.*`; VGG `features.N.{weight,bias}`;
  * the authors' GCL checkpoints (src/networks.py BaseNet): `backbone.<child>.*` with, for
    ResNets, backbone.0 = conv1, backbone.1 = bn1, backbone.4..7 = layer1..4, for VGG-16
    backbone.N = features.N; `pool.p` (GeM). The state dict may sit under `model_state_dict`
    (train.py) or `state_dict` (extract_predictions.py);
  * Patch-NetVLAD: `encoder.N.*` (VGG), `pool.conv.weight`, `pool.centroids`, `WPCA.0.{weight,bias}`
    (-> our whitening layer).
`num_batches_tracked` and classifier keys (`fc.*`, `classifier.*`) are ignored and reported as
such. Convolutions are converted OIHW -> HWIO, linear/1x1 whitening weights (out, in) -> (in, out).
Any missing key, unexpected key or shape mismatch is an error that lists all of them by name:
no partial model is ever produced.

Readers: `.pth`/`.pt`/`.tar` through torch if it is installed (`weights_only=True`), `.safetensors`
(own parser, no dependency), `.npz`.

CLI (writes an orbax checkpoint {params, model_state} that `restore_imported` reads back):
    python -m gcl_jax.models.weights --config=configs/msls.py --input=model.pth --output=DIR
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import struct
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from gcl_jax.models import vgg
from gcl_jax.models.descriptor import DescriptorNet, build_model
from gcl_jax.types import UserError

RESNET_CHILD_NAMES = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4"}
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var", "p": "p", "centroids": "centroids"}
_IGNORED_PREFIXES = ("fc.", "classifier.")


class WeightsError(UserError, ValueError):
  """A weights file that cannot be read or does not fit the model of the config."""


# ---------------------------------------------------------------------------------------------
# Readers


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a .safetensors file: u64-LE header length, JSON header, raw little-endian tensors."""
  data = pathlib.Path(path).read_bytes()
  if len(data) < 8:
    raise WeightsError(f"{path}: too short for a safetensors file")
  (n,) = struct.unpack("<Q", data[:8])
  header = json.loads(data[8:8 + n])
  base = 8 + n
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    begin, end = info["data_offsets"]
    raw = data[base + begin:base + end]
    shape = tuple(info["shape"])
    if info["dtype"] == "BF16":
      bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
      arr = bits.view(np.float32)
    elif info["dtype"] in _SAFETENSORS_DTYPES:
      arr = np.frombuffer(raw, np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<"))
    else:
      raise WeightsError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
    out[name] = np.array(arr.reshape(shape))
  return out


def _torch_to_numpy(obj: Any) -> Any:
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(obj, torch.Tensor):
    t = obj.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
      t = t.float()
    return t.numpy()
  if isinstance(obj, Mapping):
    return {k: _torch_to_numpy(v) for k, v in obj.items()}
  return obj


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a state dict (.pth/.pt/.tar via torch, .safetensors, .npz) as name -> ndarray.

  A checkpoint dict holding `model_state_dict` or `state_dict` is unwrapped; flat files whose
  keys start with `model_state_dict.` / `state_dict.` are unwrapped too.
  """
  path = str(path)
  suffix = pathlib.Path(path).suffix.lower()
  if suffix == ".safetensors":
    sd: Mapping[str, Any] = read_safetensors(path)
  elif suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      sd = {k: f[k] for k in f.files}
  elif suffix in (".pth", ".pt", ".tar", ".ckpt", ".bin"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"reading {path} needs PyTorch, which gcl-jax does not depend on: install torch in "
          "this environment, or convert the file to .safetensors/.npz elsewhere, e.g. "
          "`safetensors.torch.save_file(torch.load(p)['model_state_dict'], 'model.safetensors')`"
      ) from e
    try:
      sd = _torch_to_numpy(torch.load(path, weights_only=True, map_location="cpu"))
    except Exception as e:  # pickle errors of checkpoints holding non-tensor objects
      raise WeightsError(
          f"torch.load({path!r}, weights_only=True) failed: {e}. If the file comes from a "
          "source you trust, re-save its state dict elsewhere, e.g. "
          "`torch.save(torch.load(p, weights_only=False)['model_state_dict'], 'sd.pth')`"
      ) from e
  else:
    raise WeightsError(f"unknown checkpoint format {suffix!r} of {path}; expected .pth, .pt, "
                     ".tar, .safetensors or .npz")
  for wrapper in ("model_state_dict", "state_dict"):
    if isinstance(sd.get(wrapper), Mapping):
      sd = sd[wrapper]
      break
    prefixed = {k[len(wrapper) + 1:]: v for k, v in sd.items() if k.startswith(wrapper + ".")}
    if prefixed:
      sd = prefixed
      break
  out = {}
  for k, v in sd.items():
    if not isinstance(v, np.ndarray):
      if np.isscalar(v):
        v = np.asarray(v)
      else:
        raise WeightsError(f"{path}: entry {k!r} is not a tensor ({type(v).__name__})")
    out[k] = v
  return out


# ---------------------------------------------------------------------------------------------
# Name mapping


def _arch_kind(model: DescriptorNet) -> str:
  return "vgg" if isinstance(model.backbone, vgg.VGG16) else "resnet"


def _path_str(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]


def torch_name(path: tuple, kind: str) -> str:
  """Canonical (torchvision-style) name of one of our variables, e.g. ('backbone', 'layer1', 0,
  'conv1', 'kernel') -> 'layer1.0.conv1.weight'; VGG conv i -> 'features.<child>.weight'."""
  parts = _path_str(path)
  leaf = _LEAF_NAMES.get(parts[-1])
  if leaf is None:
    raise WeightsError(f"no PyTorch name for variable {'.'.join(parts)}")
  if parts[0] == "backbone":
    body = parts[1:-1]
    if kind == "vgg":
      if body[0] != "convs":
        raise WeightsError(f"unexpected VGG variable {'.'.join(parts)}")
      body = ["features", str(vgg.CONV_CHILD_INDEX[int(body[1])])]
    return ".".join(body + [leaf])
  if parts[0] == "whiten":
    return f"whiten.{leaf}"
  return ".".join(parts[:-1] + [leaf])


def canonical_key(key: str, kind: str) -> str | None:
  """Maps a checkpoint key to the canonical name; None for keys that are ignored on purpose."""
  while key.startswith("module."):
    key = key[len("module."):]
  if key.endswith("num_batches_tracked") or key.startswith(_IGNORED_PREFIXES):
    return None
  parts = key.split(".")
  if parts[0] in ("backbone", "encoder") and len(parts) > 2 and parts[1].isdigit():
    child = int(parts[1])
    if kind == "vgg":
      return ".".join(["features", parts[1]] + parts[2:])
    if child in RESNET_CHILD_NAMES:
      return ".".join([RESNET_CHILD_NAMES[child]] + parts[2:])
    return key  # unexpected (e.g. a ReLU index): reported by the caller
  if parts[0] == "WPCA" and len(parts) == 3 and parts[1] == "0":
    return f"whiten.{parts[2]}"
  return key


def _to_ours(value: np.ndarray, target_shape: tuple[int, ...], is_kernel: bool) -> np.ndarray:
  """PyTorch layout -> ours for kernels: OIHW -> HWIO (conv), (out, in[, 1, 1]) -> (in, out)
  (linear); other variables (biases, BatchNorm, GeM p, NetVLAD centroids) are unchanged."""
  if not is_kernel:
    return value
  if len(target_shape) == 4 and value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if len(target_shape) == 2 and value.ndim in (2, 4):
    if value.ndim == 4:
      if value.shape[2:] != (1, 1):
        return value
      value = value[:, :, 0, 0]
    return value.T
  return value


@dataclasses.dataclass
class ImportReport:
  """Outcome of matching a state dict against a model (names are checkpoint keys/ours)."""
  loaded: list[str]
  ignored: list[str]
  missing: list[str]
  unexpected: list[str]
  mismatched: list[str]

  def ignored_summary(self) -> str:
    """e.g. '53 BatchNorm num_batches_tracked; fc.weight, fc.bias'."""
    nbt = [k for k in self.ignored if k.endswith("num_batches_tracked")]
    other = [k for k in self.ignored if not k.endswith("num_batches_tracked")]
    parts = ([f"{len(nbt)} BatchNorm num_batches_tracked"] if nbt else []) + (
        [", ".join(other)] if other else [])
    return "; ".join(parts) or "none"

  @property
  def ok(self) -> bool:
    return not (self.missing or self.unexpected or self.mismatched)

  def error_message(self) -> str:
    lines = ["the checkpoint does not match the model:"]
    for what, names in (("missing (in the model, not in the checkpoint)", self.missing),
                        ("unexpected (in the checkpoint, not in the model)", self.unexpected),
                        ("shape mismatches", self.mismatched)):
      if names:
        lines.append(f"  {len(names)} {what}:")
        lines.extend(f"    {n}" for n in names)
    return "\n".join(lines)


def _match(state_dict: Mapping[str, np.ndarray], model: DescriptorNet):
  kind = _arch_kind(model)
  flat = nnx.to_flat_state(nnx.state(model))
  ours = {}  # canonical name -> (path, shape)
  for path, var in flat:
    ours[torch_name(path, kind)] = (path, tuple(var.get_value().shape))
  ignored, unexpected, mismatched, loaded = [], [], [], []
  values = {}
  seen = {}
  for key in sorted(state_dict):
    name = canonical_key(key, kind)
    if name is None:
      ignored.append(key)
      continue
    if name not in ours or name in seen:
      unexpected.append(key if name == key else f"{key} (as {name})")
      continue
    seen[name] = key
    path, shape = ours[name]
    value = _to_ours(np.asarray(state_dict[key]), shape, _path_str(path)[-1] == "kernel")
    if tuple(value.shape) != shape:
      mismatched.append(f"{key}: checkpoint {tuple(np.shape(state_dict[key]))} -> "
                        f"{tuple(value.shape)}, model {'.'.join(_path_str(path))} {shape}")
      continue
    values[path] = value
    loaded.append(key)
  missing = [f"{n} (model {'.'.join(_path_str(p))} {s})" for n, (p, s) in sorted(ours.items())
             if n not in seen]
  return ImportReport(loaded, ignored, missing, unexpected, mismatched), values


def check_state_dict(state_dict: Mapping[str, Any], model: DescriptorNet) -> ImportReport:
  """Matches names and shapes only (works on `nnx.eval_shape` models and shape-only dicts:
  any value with a `.shape`)."""
  shapes = {k: np.broadcast_to(np.zeros((), np.float32), tuple(np.shape(v)))
            for k, v in state_dict.items()}
  return _match(shapes, model)[0]


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model: DescriptorNet,
                       report: dict | None = None) -> DescriptorNet:
  """Loads a PyTorch state dict into `model` (in place; also returned).

  Args:
    state_dict: checkpoint key -> array (torchvision, authors' or Patch-NetVLAD names).
    model: a DescriptorNet (may come from `nnx.eval_shape`; every variable gets a value).
    report: if a dict, receives the ImportReport under "report".

  Raises:
    ValueError: listing all missing keys, unexpected keys and shape mismatches by name.
  """
  rep, values = _match(state_dict, model)
  if report is not None:
    report["report"] = rep
  if not rep.ok:
    raise WeightsError(rep.error_message())
  if rep.ignored:
    logging.info("ignored checkpoint keys: %s", rep.ignored_summary())
  flat = nnx.to_flat_state(nnx.state(model))
  new = []
  for path, var in flat:
    dtype = getattr(var.get_value(), "dtype", jnp.float32)
    new.append((path, var.replace(jnp.asarray(values[path], dtype=dtype))))
  nnx.update(model, nnx.from_flat_state(new))
  return model


def _model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return config.model if "model" in config else config


def load_torch_checkpoint(path: str | os.PathLike,
                          config: ml_collections.ConfigDict) -> DescriptorNet:
  """Builds the model of `config` (full config or config.model) with the weights of `path`,
  in evaluation mode (BatchNorm running statistics)."""
  mc = _model_config(config)
  model = nnx.eval_shape(lambda: build_model(mc))
  convert_state_dict(read_state_dict(path), model)
  model.eval()
  return model


def save_imported(model: DescriptorNet, directory: str | os.PathLike) -> None:
  """Writes {params, model_state} (pure pytrees, as in the trainer's TrainState) with orbax."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _, params, rest = nnx.split(model, nnx.Param, ...)
  tree = {"params": nnx.as_pure(params), "model_state": nnx.as_pure(rest)}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(directory), tree, force=True)


def restore_imported(directory: str | os.PathLike, model: DescriptorNet) -> DescriptorNet:
  """Restores what `save_imported` wrote into `model` (in place; also returned)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _, params, rest = nnx.split(model, nnx.Param, ...)
  target = {"params": nnx.as_pure(params), "model_state": nnx.as_pure(rest)}
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  with ocp.StandardCheckpointer() as ckptr:
    try:
      tree = ckptr.restore(os.path.abspath(directory), abstract)
    except (ValueError, KeyError) as e:
      raise WeightsError(f"imported checkpoint {directory} does not match the model of this "
                       f"config (arch, width, norm, pool?): {e}") from e
  nnx.replace_by_pure_dict(params, tree["params"])
  nnx.replace_by_pure_dict(rest, tree["model_state"])
  nnx.update(model, params, rest)
  return model


def import_into_state(model: DescriptorNet, config: ml_collections.ConfigDict) -> DescriptorNet:
  """Loads config.model.init_checkpoint (a PyTorch/safetensors/npz file, or a directory that
  the CLI wrote) into `model`; returns it unchanged when the key is empty.

  The trainer then builds its TrainState from the returned model:
  `create_train_state(config, mesh, model=import_into_state(build_model(config.model), config))`.
  """
  path = _model_config(config).init_checkpoint
  if not path:
    return model
  if os.path.isdir(path):
    return restore_imported(path, model)
  return convert_state_dict(read_state_dict(path), model)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from gcl_jax.models import freeze, summary  # pylint: disable=g-import-not-at-top
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes
  flg = flags.FLAGS
  config = flg.config
  sd = read_state_dict(flg.input)
  model = nnx.eval_shape(lambda: build_model(config.model))
  rep = {}
  convert_state_dict(sd, model, report=rep)
  r = rep["report"]
  print(f"loaded {len(r.loaded)} tensors from {flg.input}; ignored {r.ignored_summary()}")
  mc = config.model
  mask = freeze.trainable_mask(model, mc.arch, mc.last_layer)
  print(summary.parameter_table(nnx.as_pure(nnx.state(model, nnx.Param)), mask))
  save_imported(model, flg.output)
  print(f"wrote {os.path.abspath(flg.output)}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/msls.py.",
                                  lock_config=True)
  flags.DEFINE_string("input", None, "PyTorch checkpoint (.pth, .safetensors, .npz).")
  flags.DEFINE_string("output", None, "Directory for the orbax checkpoint {params, model_state}.")
  flags.mark_flags_as_required(["config", "input", "output"])
  app.run(main)

"""Import of PyTorch state dicts: key mapping (torchvision, authors', Patch-NetVLAD), layouts,
error reports by name, readers, the orbax round trip and the CLI."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import default
from gcl_jax.models import build_model, weights

RESNET_AUTHORS = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6",
                  "layer4": "7"}


def _cfg(arch, width=64, pool="gem", **kw):
  cfg = default.get_config().model
  cfg.arch, cfg.width, cfg.norm, cfg.pool = arch, width, "batch", pool
  for k, v in kw.items():
    setattr(cfg, k, v)
  return cfg


def _abstract(cfg):
  return nnx.eval_shape(lambda: build_model(cfg))


def _to_authors(key):
  """torchvision key -> the authors' BaseNet key (backbone.<child>...)."""
  head, rest = key.split(".", 1)
  if head == "features":
    return "backbone." + rest
  return f"backbone.{RESNET_AUTHORS[head]}.{rest}"


@pytest.fixture(scope="module")
def key_shapes(request):
  path = request.config.rootpath / "tests" / "data" / "torch_key_shapes.json"
  return json.loads(path.read_text())


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                  "resnext101_32x8d", "vgg16"])
def test_full_size_torchvision_keys_and_shapes_map_exactly(arch, key_shapes):
  sd = {k: np.broadcast_to(np.float32(0), s) for k, s in key_shapes[arch].items()}
  sd["pool.p"] = np.zeros((1,), np.float32)
  rep = weights.check_state_dict(sd, _abstract(_cfg(arch)))
  assert rep.ok, rep.error_message()
  head = "classifier." if arch == "vgg16" else "fc."
  assert all(k.startswith(head) or k.endswith("num_batches_tracked") for k in rep.ignored)
  assert any(k.startswith(head) for k in rep.ignored)
  assert len(rep.loaded) + len(rep.ignored) == len(sd)


def test_authors_key_layout(data_dir, key_shapes):
  g = json.loads((data_dir / "golden_state_dict_keys.json").read_text())
  vgg = {_to_authors(k): s for k, s in key_shapes["vgg16"].items() if k.startswith("features.")}
  vgg["pool.p"] = [1]
  assert list(vgg) == g["vgg16_keys"]
  rep = weights.check_state_dict({k: np.zeros(s) for k, s in vgg.items()},
                                 _abstract(_cfg("vgg16")))
  assert rep.ok and not rep.ignored and len(rep.loaded) == 27
  r50 = {_to_authors(k): s for k, s in key_shapes["resnet50"].items() if not k.startswith("fc.")}
  r50["pool.p"] = [1]
  keys = list(r50)
  assert len(keys) == g["resnet50_n_keys"] == 319
  assert keys[:len(g["resnet50_first_keys"])] == g["resnet50_first_keys"]
  assert set(g["resnet50_last_keys"]) <= set(keys)
  rep = weights.check_state_dict({k: np.broadcast_to(0.0, s) for k, s in r50.items()},
                                 _abstract(_cfg("resnet50")))
  assert rep.ok, rep.error_message()
  assert len(rep.ignored) == 53  # one num_batches_tracked per BatchNorm


def test_errors_name_every_missing_unexpected_and_mismatched_key(data_dir):
  sd = weights.read_state_dict(data_dir / "torch_golden_resnet18.safetensors")
  del sd["backbone.4.0.conv1.weight"]
  del sd["pool.p"]
  sd["backbone.7.1.conv3.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  sd["backbone.2.weight"] = np.zeros((3,), np.float32)  # child 2 is the ReLU
  sd["backbone.1.weight"] = np.zeros((9,), np.float32)
  model = _abstract(_cfg("resnet18", 8))
  with pytest.raises(ValueError) as e:
    weights.convert_state_dict(sd, model)
  msg = str(e.value)
  for name in ("layer1.0.conv1.weight", "pool.p", "backbone.7.1.conv3.weight",
               "backbone.2.weight", "backbone.1.weight: checkpoint (9,)", "2 missing",
               "2 unexpected", "1 shape mismatches"):
    assert name in msg, name
  # no partial model: nothing was written
  assert all(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree.leaves(nnx.state(model)))


def test_layout_conversion_and_ignored_keys(data_dir):
  sd = weights.read_state_dict(data_dir / "torch_golden_resnet18.safetensors")
  assert sd["backbone.1.num_batches_tracked"].dtype == np.int64
  sd["fc.weight"] = np.zeros((1000, 64), np.float32)
  sd = {"module." + k: v for k, v in sd.items()}  # DataParallel prefix
  rep = {}
  model = weights.convert_state_dict(sd, _abstract(_cfg("resnet18", 8)), report=rep)
  assert "module.fc.weight" in rep["report"].ignored
  assert len(rep["report"].loaded) == 121 - 20
  np.testing.assert_array_equal(model.backbone.layer2[0].downsample[0].kernel[...],
                                np.transpose(sd["module.backbone.5.0.downsample.0.weight"],
                                             (2, 3, 1, 0)))
  np.testing.assert_array_equal(model.backbone.layer2[0].downsample[1].var[...],
                                sd["module.backbone.5.0.downsample.1.running_var"])
  np.testing.assert_array_equal(model.backbone.bn1.scale[...], sd["module.backbone.1.weight"])


def test_patch_netvlad_names_and_whitening_layout():
  model = _abstract(_cfg("vgg16", 4, pool="netvlad", netvlad_clusters=2, whitening_dim=8))
  rng = np.random.default_rng(0)
  sd = {}
  for (path, var) in nnx.to_flat_state(nnx.state(model)):
    name = weights.torch_name(path, "vgg")
    shape = var.get_value().shape
    if name.startswith("features."):
      name = "encoder." + name[len("features."):]
      shape = (shape[3], shape[2], 3, 3) if len(shape) == 4 else shape
    elif name == "pool.conv.weight":
      shape = (2, 32, 1, 1)
    elif name == "whiten.weight":
      name, shape = "WPCA.0.weight", (8, 64, 1, 1)
    elif name == "whiten.bias":
      name = "WPCA.0.bias"
    sd[name] = rng.standard_normal(shape).astype(np.float32)
  model = weights.convert_state_dict(sd, model)
  np.testing.assert_array_equal(model.whiten.proj.kernel[...], sd["WPCA.0.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(model.pool.conv.kernel[...][0, 0],
                                sd["pool.conv.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(model.backbone.convs[12].kernel[...],
                                np.transpose(sd["encoder.28.weight"], (2, 3, 1, 0)))


def test_readers_npz_wrappers_and_missing_torch(tmp_path, data_dir, monkeypatch):
  sd = weights.read_state_dict(data_dir / "torch_golden_vgg16.safetensors")
  np.savez(tmp_path / "m.npz", **{"model_state_dict." + k: v for k, v in sd.items()})
  back = weights.read_state_dict(tmp_path / "m.npz")
  assert set(back) == set(sd)
  np.testing.assert_array_equal(back["backbone.28.weight"], sd["backbone.28.weight"])
  monkeypatch.setitem(sys.modules, "torch", None)
  (tmp_path / "m.pth").write_bytes(b"")
  with pytest.raises(ImportError, match="needs PyTorch"):
    weights.read_state_dict(tmp_path / "m.pth")
  with pytest.raises(ValueError, match=".h5"):
    weights.read_state_dict(tmp_path / "m.h5")


def test_orbax_round_trip_import_into_state_and_cli(tmp_path, data_dir):
  path = str(data_dir / "torch_golden_vgg16.safetensors")
  model = weights.load_torch_checkpoint(path, _cfg("vgg16", 8))
  out = tmp_path / "imported"
  cmd = [sys.executable, "-m", "gcl_jax.models.weights", "--config=configs/default.py",
         "--config.model.arch=vgg16", "--config.model.width=8", f"--input={path}",
         f"--output={out}"]
  res = subprocess.run(cmd, cwd=data_dir.parents[1], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "backbone.convs.0.kernel" in res.stdout and "trainable" in res.stdout
  cfg = default.get_config()
  cfg.model.arch, cfg.model.width = "vgg16", 8
  cfg.model.init_checkpoint = str(out)
  restored = weights.import_into_state(_abstract(cfg.model), cfg)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model), nnx.state(restored))
  cfg.model.init_checkpoint = path
  direct = weights.import_into_state(_abstract(cfg.model), cfg)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model), nnx.state(direct))
  cfg.model.width = 4
  with pytest.raises(ValueError):
    weights.import_into_state(_abstract(cfg.model), cfg)


def test_pth_reader_unwraps_model_state_dict_with_a_stand_in_torch(tmp_path, monkeypatch):
  """The .pth path (torch.load(weights_only=True)) without torch: a minimal stand-in module."""
  import types  # pylint: disable=g-import-not-at-top

  class Tensor:
    def __init__(self, a):
      self.a, self.dtype = a, "float32"

    def detach(self):
      return self

    def cpu(self):
      return self

    def numpy(self):
      return self.a

  calls = {}

  def load(path, weights_only, map_location):
    calls.update(path=path, weights_only=weights_only, map_location=map_location)
    return {"epoch": 3, "model_state_dict": {"pool.p": Tensor(np.array([3.0], np.float32))},
            "optimizer_state_dict": {"state": {}}}

  fake = types.SimpleNamespace(Tensor=Tensor, load=load, bfloat16="bf16", float16="f16")
  monkeypatch.setitem(sys.modules, "torch", fake)
  (tmp_path / "m.pth").write_bytes(b"")
  sd = weights.read_state_dict(tmp_path / "m.pth")
  assert calls["weights_only"] is True and calls["map_location"] == "cpu"
  assert list(sd) == ["pool.p"] and sd["pool.p"].tolist() == [3.0]

"""Descriptor cache: keyed reuse, invalidation and atomic writes."""

import json
import os

import ml_collections
import numpy as np
import pytest

from gcl_jax.types import ImageTable
from gcl_jax.evaluation.cache import DescriptorCache, cache_fields, cache_key


def table(keys=("a", "b", "c"), root="/data", name="cph/query") -> ImageTable:
  n = len(keys)
  return ImageTable(root=root, name=name, paths=np.array([f"{name}/{k}.jpg" for k in keys]),
                    keys=np.array(keys), utm=np.zeros((n, 2)), heading=np.zeros(n),
                    pano=np.zeros(n, bool), night=np.zeros(n, bool), in_all=np.ones(n, bool))


def model_config(**overrides):
  cfg = ml_collections.ConfigDict({"backbone": "resnet50", "pool": "gem", "p": 3.0})
  cfg.update(overrides)
  return cfg


def fields(**overrides):
  base = dict(checkpoint="/ckpt/run1", step=1000, model_config=model_config(),
              image_size=(480, 640), tables=[table()])
  base.update(overrides)
  return base


def test_key_is_stable_and_depends_on_every_field():
  key = cache_key(**fields())
  assert len(key) == 64 and key == cache_key(**fields())
  # Same content, another object / mapping order / tuple vs list: same key.
  same = cache_key(**fields(model_config={"pool": "gem", "p": 3.0, "backbone": "resnet50"},
                            image_size=[480, 640], tables=[table()]))
  assert same == key
  changed = [
      fields(step=1001), fields(checkpoint="/ckpt/run2"), fields(model_config=model_config(p=4.0)),
      fields(image_size=(240, 320)), fields(tables=[table(("a", "b", "d"))]),
      fields(tables=[table(root="/other")]), fields(tables=[table(), table(name="cph/database")]),
      fields(extra={"whitening": "pca1024"}),
  ]
  keys = {cache_key(**f) for f in changed}
  assert key not in keys and len(keys) == len(changed)


def test_miss_then_hit_reuses_the_file(tmp_path):
  cache = DescriptorCache(tmp_path / "desc")
  key = cache_key(**fields())
  calls = []

  def compute():
    calls.append(1)
    return np.arange(12, dtype=np.float64).reshape(3, 4)

  desc, hit = cache.get_or_compute(key, compute, fields=cache_fields(**fields()), expected_rows=3)
  assert not hit and desc.dtype == np.float32 and len(calls) == 1
  again, hit = cache.get_or_compute(key, compute, expected_rows=3)
  assert hit and len(calls) == 1
  np.testing.assert_array_equal(again, desc)
  npy, meta = cache.paths(key)
  record = json.loads(open(meta).read())
  assert record["shape"] == [3, 4] and record["fields"]["step"] == 1000
  assert record["fields"]["tables"][0]["rows"] == 3
  # Another step is another entry: computed again.
  _, hit = cache.get_or_compute(cache_key(**fields(step=2000)), compute)
  assert not hit and len(calls) == 2
  assert sorted(os.listdir(tmp_path / "desc")) == sorted(
      [os.path.basename(p) for k in (key, cache_key(**fields(step=2000))) for p in cache.paths(k)])


def test_atomic_write_leaves_no_partial_entry(tmp_path, monkeypatch):
  cache = DescriptorCache(tmp_path)
  key = cache_key(**fields())

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "save", fail)
  with pytest.raises(OSError, match="disk full"):
    cache.save(key, np.ones((3, 2)))
  monkeypatch.undo()
  assert os.listdir(tmp_path) == [] and cache.load(key) is None
  # A .npy without its metadata (crash between the two renames) is not trusted.
  npy, _ = cache.paths(key)
  np.save(npy, np.ones((3, 2), np.float32))
  assert cache.load(key) is None


def test_errors(tmp_path):
  cache = DescriptorCache(tmp_path)
  key = cache_key(**fields())
  with pytest.raises(ValueError, match="computed descriptors for key .* have 2 rows, expected 3"):
    cache.get_or_compute(key, lambda: np.ones((2, 4)), expected_rows=3)
  with pytest.raises(ValueError, match="64-character SHA-256 hex digest, got 'nope'"):
    cache.load("nope")
  with pytest.raises(ValueError, match="tables is empty"):
    cache_key(**fields(tables=[]))
  with pytest.raises(TypeError, match="cannot key a descriptor cache on <object"):
    cache_key(**fields(extra={"x": object()}))
  with pytest.raises(ValueError, match=r"descriptors must be 2-D \(N, D\), got shape \(3,\)"):
    cache.save(key, np.ones(3))

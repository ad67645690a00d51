"""Place index directories: save/load round trip, exact and approximate search, fingerprints,
and the errors of corrupt or mismatched directories (synthetic descriptors; no network)."""

import json

import ml_collections
import numpy as np
import pytest

from gcl_jax.evaluation import knn_search, learn_pca_whitening
from gcl_jax.localize import index as index_lib

PREPROCESSING = {"image_size": [32, 48], "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225], "resize_method": "pil", "fast_decode": False}


def clustered(n, dim, num_queries, seed=0, per_cluster=10, noise=1.0):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((max(1, n // per_cluster), dim))
  db = centres[np.arange(n) % len(centres)] + noise * rng.standard_normal((n, dim))
  q = centres[rng.integers(0, len(centres), num_queries)] + noise * rng.standard_normal(
      (num_queries, dim))
  norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  return norm(db), norm(q)


def images(n):
  return {"keys": np.array([f"img{i:04d}" for i in range(n)]),
          "paths": np.array([f"/data/db/img{i:04d}.jpg" for i in range(n)]),
          "cities": np.array(["north"] * (n // 2) + ["south"] * (n - n // 2)),
          "utm": np.stack([np.arange(n) * 10.0, np.arange(n) * -5.0 + 1000.0], axis=1),
          "heading": np.arange(n) % 360.0}


def model_config(**overrides):
  return ml_collections.ConfigDict({"arch": "resnet18", "width": 8, "pool": "gem",
                                    "init_checkpoint": "", "dtype": "float32", **overrides})


WEIGHTS = {"params['w']": np.arange(6, dtype=np.float32).reshape(2, 3)}


def write(directory, db, index_type="flat", params=None, **kwargs):
  return index_lib.write_index(str(directory), descriptors=db, images=images(len(db)),
                               weights=WEIGHTS, model_config=model_config(),
                               preprocessing=PREPROCESSING, index_type=index_type, params=params,
                               **kwargs)


def test_saved_flat_index_searches_as_evaluation(tmp_path):
  db, q = clustered(300, 16, 40)
  manifest = write(tmp_path / "idx", db)
  assert manifest["num_images"] == 300 and manifest["index"]["type"] == "flat"
  assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
      "images.npz", "index.faiss", "manifest.json", "model.npz"]
  index = index_lib.load_index(str(tmp_path / "idx"))
  assert len(index) == 300 and index.preprocessing == PREPROCESSING
  matches = index.search_descriptors(q, 10)
  distances, indices = knn_search(db, q, 10)
  np.testing.assert_array_equal(matches.indices, indices)
  np.testing.assert_array_equal(matches.distances, distances)
  np.testing.assert_array_equal(matches.keys, images(300)["keys"][indices])
  np.testing.assert_array_equal(matches.positions, images(300)["utm"][indices])
  np.testing.assert_array_equal(matches.headings, images(300)["heading"][indices])
  # k beyond the database is clipped, as in evaluation.
  assert index.search_descriptors(q[:2], 1000).indices.shape == (2, 300)


def test_position_estimates():
  matches = index_lib.Matches(
      indices=np.array([[3, 1, -1]]), distances=np.array([[1.0, 3.0, np.inf]], np.float32),
      keys=np.array([["a", "b", ""]]), paths=np.array([["", "", ""]]),
      positions=np.array([[[0.0, 0.0], [40.0, 80.0], [np.nan, np.nan]]]),
      headings=np.zeros((1, 3)))
  np.testing.assert_array_equal(matches.estimate_top1(), [[0.0, 0.0]])
  w1, w3 = 1 / (1 + 1e-6), 1 / (3 + 1e-6)  # weights 1 / (d + eps), the empty slot weighs 0
  np.testing.assert_allclose(matches.estimate_weighted(), [[40 * w3 / (w1 + w3),
                                                            80 * w3 / (w1 + w3)]])
  np.testing.assert_allclose(matches.weights().sum(axis=1), [1.0])


def test_pca_whitened_index(tmp_path):
  db, q = clustered(300, 32, 20, seed=1)
  whitening = learn_pca_whitening(db, fit_set="eval_database")
  write(tmp_path / "idx", db, pca=whitening, pca_dim=8)
  index = index_lib.load_index(str(tmp_path / "idx"))
  assert index.manifest["index"]["dim"] == 8 and index.manifest["descriptor_dim"] == 32
  matches = index.search_descriptors(q, 5)
  _, expected = knn_search(whitening.apply(db, 8), whitening.apply(q, 8), 5)
  np.testing.assert_array_equal(matches.indices, expected)


def _recall(found, exact, k):
  return float(np.mean([np.intersect1d(a[:k], e[:k]).size for a, e in zip(found, exact)]) / k)


def test_approximate_indexes_against_exact(tmp_path):
  """Full probing makes IVF exact, a beam as wide as the database makes HNSW exact; the default
  parameters' recall is measured (printed) and IVF-PQ's loss is bounded."""
  db, q = clustered(1000, 32, 100, seed=2)
  _, exact = knn_search(db, q, 10)
  recalls = {}
  for kind, full in (("ivf", {"nlist": 30, "nprobe": 30, "train_size": 300}),  # a sample
                     ("hnsw", {"m": 16, "ef_construction": 40, "ef_search": 1000}),
                     ("ivfpq", None)):
    defaults = index_lib.index_params(kind, len(db), 32)
    for name, params in (("default", defaults), ("full", full)):
      if params is None:
        continue
      write(tmp_path / f"{kind}_{name}", db, kind, params)
      index = index_lib.load_index(str(tmp_path / f"{kind}_{name}"))
      assert index.manifest["index"]["params"] == params
      found = index.search_descriptors(q, 10).indices
      recalls[f"{kind}_{name}"] = (_recall(found, exact, 1), _recall(found, exact, 10))
      if name == "full":
        np.testing.assert_array_equal(found, exact)
  print("recall@1, recall@10 against exact (1000 x 32-d, 100 queries):", recalls)
  for key, (r1, r10) in recalls.items():
    assert 0.0 <= r1 <= 1.0 and 0.0 <= r10 <= 1.0, key
  assert recalls["ivf_default"][1] > 0.5 and recalls["hnsw_default"][1] > 0.9
  assert 0.1 < recalls["ivfpq_default"][1] < 1.0  # 2 bytes per vector: lossy, not useless
  # Search parameters can be changed on a loaded index.
  index = index_lib.load_index(str(tmp_path / "ivf_default"))
  index.set_search_params(nprobe=index.manifest["index"]["params"]["nlist"])
  np.testing.assert_array_equal(index.search_descriptors(q, 10).indices, exact)


def test_index_params_errors():
  assert index_lib.index_params("ivf", 100, 16) == {"nlist": 40, "nprobe": 16, "train_size": 100}
  assert index_lib.index_params("ivf", 10**6, 16, train_size=128000)["train_size"] == 128000
  assert index_lib.index_params("ivf", 10**6, 16, nlist=10)["train_size"] == 2560
  assert index_lib.index_params("ivfpq", 1000, 2048)["pq_m"] == 128
  assert index_lib.index_params("ivfpq", 1000, 256)["pq_m"] == 16
  with pytest.raises(ValueError, match=r"config.export.index_type must be one of .*'annoy'"):
    index_lib.index_params("annoy", 10, 4)
  with pytest.raises(ValueError, match=r"config.export.ivf_nlist must be in \[1, 10\].*got 11"):
    index_lib.index_params("ivf", 10, 4, nlist=11)
  with pytest.raises(ValueError, match="config.export.pq_m = 3 must divide .* dimension 16"):
    index_lib.index_params("ivfpq", 1000, 16, pq_m=3)
  with pytest.raises(ValueError, match="pq_nbits = 8 needs at least 256 training images.*got 100"):
    index_lib.index_params("ivfpq", 100, 16)
  with pytest.raises(ValueError, match="pq_nbits = 8 needs .* got 200 .*ivf_train_size"):
    index_lib.index_params("ivfpq", 1000, 16, train_size=200)
  with pytest.raises(ValueError, match="ivf_train_size = 30 is fewer than the 40 lists"):
    index_lib.index_params("ivf", 100, 16, train_size=30)
  with pytest.raises(ValueError, match="ivf_train_size must be >= 0.*got -1"):
    index_lib.index_params("ivf", 100, 16, train_size=-1)


@pytest.fixture
def saved(tmp_path):
  db, _ = clustered(50, 8, 1)
  write(tmp_path / "idx", db)
  return tmp_path / "idx"


def _edit_manifest(directory, edit):
  path = directory / "manifest.json"
  manifest = json.loads(path.read_text())
  edit(manifest)
  path.write_text(json.dumps(manifest))


def test_corrupt_directories_name_the_file_and_field(saved, tmp_path):
  load = lambda: index_lib.load_index(str(saved))
  with pytest.raises(index_lib.IndexFormatError, match="no such index directory"):
    index_lib.load_index(str(tmp_path / "nothing"))
  (saved / "index.faiss").write_bytes((saved / "index.faiss").read_bytes()[:100])
  with pytest.raises(index_lib.IndexFormatError, match=r"index\.faiss: not a readable FAISS"):
    load()
  write(saved, clustered(50, 8, 1)[0])
  with np.load(saved / "images.npz") as z:
    arrays = {k: z[k] for k in z.files if k != "utm"}
  np.savez(saved / "images.npz", **arrays)
  with pytest.raises(index_lib.IndexFormatError, match=r"images\.npz: array 'utm' missing"):
    load()
  write(saved, clustered(50, 8, 1)[0])
  _edit_manifest(saved, lambda m: m.update(num_images=49))
  with pytest.raises(index_lib.IndexFormatError, match=r"index\.faiss: holds 50 vectors but "
                     "manifest field 'num_images' is 49"):
    load()
  write(saved, clustered(50, 8, 1)[0])
  _edit_manifest(saved, lambda m: m["index"].update(type="annoy"))
  with pytest.raises(index_lib.IndexFormatError, match=r"manifest\.json: field 'index\.type'"):
    load()
  write(saved, clustered(50, 8, 1)[0])
  _edit_manifest(saved, lambda m: m["preprocessing"].update(image_size=[64, 96]))
  with pytest.raises(index_lib.IndexFormatError,
                     match=r"manifest\.json: field 'fingerprint\.preprocessing' does not match"):
    load()
  (saved / "manifest.json").write_text("{not json")
  with pytest.raises(index_lib.IndexFormatError, match=r"manifest\.json: not valid JSON"):
    load()
  (saved / "manifest.json").unlink()
  with pytest.raises(index_lib.IndexFormatError, match=r"manifest\.json: missing"):
    load()


def test_mismatched_model_or_preprocessing_is_refused(saved, tmp_path):
  # Weights of another model copied into the directory.
  np.savez(saved / "model.npz", **{"params['w']": np.ones((2, 3), np.float32)})
  with pytest.raises(index_lib.IndexMismatchError,
                     match=r"model\.npz: weights SHA-256 .* differs from the manifest"):
    index_lib.load_index(str(saved))
  index = index_lib.load_index(str(saved), check_weights=False)
  sha = index_lib.weights_sha256(WEIGHTS)
  index.check_fingerprint(index_lib.model_record(model_config(), sha), PREPROCESSING)  # same: ok
  # Training-only keys do not change the fingerprint.
  index.check_fingerprint(index_lib.model_record(model_config(init_checkpoint="x.pth"), sha))
  with pytest.raises(index_lib.IndexMismatchError,
                     match=r"(?s)another model or preprocessing.*model\.config\.arch: index "
                           r"'resnet18', given 'resnet50'"):
    index.check_fingerprint(index_lib.model_record(model_config(arch="resnet50"), sha))
  with pytest.raises(index_lib.IndexMismatchError, match=r"model\.weights_sha256: index"):
    index.check_fingerprint(index_lib.model_record(model_config(), "0" * 64))
  with pytest.raises(index_lib.IndexMismatchError,
                     match=r"preprocessing\.image_size: index \[32, 48\], given \[480, 640\]"):
    index.check_fingerprint(preprocessing={**PREPROCESSING, "image_size": [480, 640]})

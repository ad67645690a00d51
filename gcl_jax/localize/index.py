"""A place index on disk: a FAISS index of a mapped area's database images, and searching it.

An index directory (written by `gcl_jax.localize.export`, read by `load_index`) holds everything
needed to localize new photos, with no training run or config at hand:

    manifest.json     what the directory holds: the FAISS index type and its parameters, the
                      descriptor dimension, the number of images, the model (its config, training
                      step, checkpoint and the SHA-256 of its weights), the preprocessing (image
                      size, mean, std, resize method), the PCA-whitening (if any) and the
                      fingerprint: SHA-256 digests of the model and of the preprocessing.
    index.faiss       the FAISS index (faiss.write_index) over the (whitened) descriptors,
                      row i = image i.
    images.npz        per image: key, path, city, UTM east/north (metres), heading (degrees).
    model.npz         the network's weights (parameters and normalisation statistics), keyed by
                      their path in the model's state.
    pca.npz           the PCA-whitening (mean, projection rows, eigenvalues), when used.
    descriptors/      the raw descriptors in chunks `<start>-<end>.npy` (image rows [start, end))
                      and `fingerprint.json` (the model and preprocessing they were computed with);
                      an interrupted export resumes from them, and another index type can be built
                      from them without describing the images again.

Distances are squared L2 between L2-normalized descriptors, as in evaluation
(`gcl_jax.evaluation.knn`). Every file is written atomically through `gcl_jax.io` (local paths or
URLs), so a reader sees a complete file or none.

    index = gcl_jax.load_index("runs/demo/index")
    matches = index.search(["photo1.jpg", "photo2.jpg"], k=5)
    matches.keys[0], matches.distances[0], matches.positions[0]   # (5,), (5,), (5, 2)

`load_index` checks the directory (every file present, readable and consistent with the manifest,
the weights those of the fingerprint) and raises `IndexFormatError` naming the file and field at
fault. `check_fingerprint` refuses an index built with another model or preprocessing than the
one a caller describes photos with (`IndexMismatchError`, naming each field that differs).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io as _io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gcl_jax import io
from gcl_jax.evaluation import cache
from gcl_jax.types import UserError

FORMAT = "gcl_jax.place_index"
VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IMAGES_FILE = "images.npz"
MODEL_FILE = "model.npz"
PCA_FILE = "pca.npz"
DESCRIPTORS_DIR = "descriptors"
INDEX_TYPES = ("flat", "ivf", "hnsw", "ivfpq")
# Keys of a preprocessing record: what decides the pixels the network sees.
PREPROCESSING_KEYS = ("image_size", "mean", "std", "resize_method", "fast_decode")
_IMAGE_FIELDS = {"keys": "U", "paths": "U", "cities": "U", "utm": "f", "heading": "f"}


class IndexFormatError(UserError, ValueError):
  """A missing, unreadable or inconsistent file of an index directory (the message names it)."""


class IndexMismatchError(UserError, ValueError):
  """An index built with another model or preprocessing than the one searching it."""


class LocalizeConfigError(UserError, ValueError):
  """A missing or invalid config.export / config.localize key (the message names it)."""


# ----------------------------------------------------------------------------------- fingerprint


def _digest(value: Any) -> str:
  text = json.dumps(cache.plain(value), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def preprocessing_record(data_config) -> dict:
  """The preprocessing of config.data that decides the network's input pixels (JSON-ready)."""
  return {"image_size": [int(s) for s in data_config.image_size],
          "mean": [float(m) for m in data_config.mean], "std": [float(s) for s in data_config.std],
          "resize_method": str(data_config.resize_method),
          "fast_decode": bool(data_config.fast_decode)}


# Model config keys that cannot change the descriptors of given weights (training-only knobs).
_MODEL_KEYS_NOT_FINGERPRINTED = ("init_checkpoint", "cpu_conv", "bn_mode", "last_layer", "gem_p")


def model_record(model_config, weights_sha256: str) -> dict:
  """The model part of a fingerprint: the descriptor-relevant config keys and the weights' hash."""
  config = cache.plain(model_config)
  for key in _MODEL_KEYS_NOT_FINGERPRINTED:
    config.pop(key, None)
  return {"config": config, "weights_sha256": weights_sha256}


def fingerprint(model: Mapping, preprocessing: Mapping) -> dict:
  """{"model": digest, "preprocessing": digest} of a model record and a preprocessing record."""
  return {"model": _digest(model), "preprocessing": _digest(preprocessing)}


def _flatten(d: Any, prefix: str = "") -> dict:
  if isinstance(d, Mapping):
    out = {}
    for k, v in d.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: d}


def differences(expected: Mapping, actual: Mapping) -> list[str]:
  """'field: index X, given Y' for every leaf that differs between two records."""
  a, b = _flatten(cache.plain(expected)), _flatten(cache.plain(actual))
  return [f"{k}: index {a.get(k, '<absent>')!r}, given {b.get(k, '<absent>')!r}"
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_fingerprint(manifest: Mapping, model: Mapping | None, preprocessing: Mapping | None,
                      where: str = "index") -> None:
  """Raises IndexMismatchError unless `model` / `preprocessing` (records; None: not checked)
  are those the index at `where` was built with; the message names every differing field."""
  problems = []
  if model is not None and _digest(model) != manifest["fingerprint"]["model"]:
    recorded = model_record(manifest["model"]["config"], manifest["model"]["weights_sha256"])
    problems += [f"model.{d}" for d in differences(recorded, model)] or [
        "model: fingerprint differs"]
  if preprocessing is not None and (_digest(preprocessing)
                                    != manifest["fingerprint"]["preprocessing"]):
    problems += [f"preprocessing.{d}"
                 for d in differences(manifest["preprocessing"], preprocessing)] or [
                     "preprocessing: fingerprint differs"]
  if problems:
    raise IndexMismatchError(
        f"{where} was built with another model or preprocessing; refusing to search it:\n  "
        + "\n  ".join(problems))


# --------------------------------------------------------------------------------------- weights


def _state_leaves(tree) -> list[tuple[str, Any]]:
  import jax  # pylint: disable=g-import-not-at-top
  return [(jax.tree_util.keystr(path), leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def weights_arrays(params, model_state) -> dict[str, np.ndarray]:
  """The network's weights as {"params<path>": array, "state<path>": array} (host numpy)."""
  import jax  # pylint: disable=g-import-not-at-top
  out = {}
  for prefix, tree in (("params", params), ("state", model_state)):
    for name, leaf in _state_leaves(tree):
      out[prefix + name] = np.asarray(jax.device_get(leaf))
  return out


def weights_sha256(arrays: Mapping[str, np.ndarray]) -> str:
  """SHA-256 over the names, dtypes, shapes and bytes of the weight arrays (sorted by name)."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}|{a.dtype.str}|{a.shape}\0".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  io.atomic_write_with(path, lambda f: np.savez(f, **arrays))


def read_npz(path: str, what: str) -> dict[str, np.ndarray]:
  """All arrays of an .npz file; IndexFormatError naming `path` when missing or unreadable."""
  if not io.exists(path):
    raise IndexFormatError(f"{path}: missing ({what})")
  try:
    with np.load(_io.BytesIO(io.path(path).read_bytes()), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except Exception as e:  # pylint: disable=broad-except
    raise IndexFormatError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------------------- FAISS


def pq_m_auto(dim: int) -> int:
  """Default PQ sub-quantizers: the largest divisor of `dim` not above max(1, dim // 16)."""
  top = max(1, dim // 16)
  return max(m for m in range(1, top + 1) if dim % m == 0)


def index_params(index_type: str, num: int, dim: int, *, nlist: int = 0, nprobe: int = 16,
                 hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128,
                 pq_m: int = 0, pq_nbits: int = 8, train_size: int = 0) -> dict:
  """The resolved parameters of an index type for `num` descriptors of dimension `dim`.

  nlist 0 means round(4 sqrt(num)) (at most 65536 and `num`); pq_m 0 means `pq_m_auto(dim)`;
  train_size (IVF k-means and PQ codebook training points, a seeded sample of the database)
  0 means FAISS's own cap, 256 per list; either is at most `num`.

  Raises:
    ValueError: unknown type or an impossible parameter (the message names the config key).
  """
  if index_type not in INDEX_TYPES:
    raise LocalizeConfigError(f"config.export.index_type must be one of {INDEX_TYPES}, got "
                              f"{index_type!r}")
  if num < 1:
    raise ValueError("no database descriptors to index")
  if index_type == "flat":
    return {}
  if index_type == "hnsw":
    for key, value in (("hnsw_m", hnsw_m), ("hnsw_ef_construction", ef_construction),
                       ("hnsw_ef_search", ef_search)):
      if int(value) < 1:
        raise LocalizeConfigError(f"config.export.{key} must be >= 1, got {value!r}")
    return {"m": int(hnsw_m), "ef_construction": int(ef_construction),
            "ef_search": int(ef_search)}
  nlist = int(nlist) or max(1, min(65536, num, round(4 * math.sqrt(num))))
  if not 1 <= nlist <= num:
    raise LocalizeConfigError(f"config.export.ivf_nlist must be in [1, {num}] (the number of "
                              f"database images), got {nlist}")
  if int(nprobe) < 1:
    raise LocalizeConfigError(f"config.export.ivf_nprobe must be >= 1, got {nprobe!r}")
  if int(train_size) < 0:
    raise LocalizeConfigError(f"config.export.ivf_train_size must be >= 0 (0: 256 per list), "
                              f"got {train_size!r}")
  train = min(num, int(train_size) or 256 * nlist)
  if train < nlist:
    raise LocalizeConfigError(f"config.export.ivf_train_size = {train_size} is fewer than the "
                              f"{nlist} lists (config.export.ivf_nlist) it trains")
  params = {"nlist": nlist, "nprobe": min(int(nprobe), nlist), "train_size": train}
  if index_type == "ivfpq":
    m = int(pq_m) or pq_m_auto(dim)
    if m < 1 or dim % m:
      raise LocalizeConfigError(f"config.export.pq_m = {m} must divide the descriptor "
                                f"dimension {dim}")
    if not 1 <= int(pq_nbits) <= 16:
      raise LocalizeConfigError(f"config.export.pq_nbits must be in [1, 16], got {pq_nbits!r}")
    if train < 2 ** int(pq_nbits):
      raise LocalizeConfigError(f"config.export.pq_nbits = {pq_nbits} needs at least "
                                f"{2 ** int(pq_nbits)} training images for its codebooks, got "
                                f"{train} (database images, at most config.export."
                                f"ivf_train_size); lower pq_nbits")
    params.update(pq_m=m, pq_nbits=int(pq_nbits))
  return params


def build_faiss_index(descriptors: np.ndarray, index_type: str, params: Mapping, seed: int = 0):
  """A FAISS index of `index_type` with resolved `params` (`index_params`) over the rows."""
  import faiss  # pylint: disable=g-import-not-at-top
  x = np.ascontiguousarray(descriptors, np.float32)
  dim = x.shape[1]
  if index_type == "flat":
    index = faiss.IndexFlatL2(dim)
  elif index_type == "hnsw":
    index = faiss.IndexHNSWFlat(dim, params["m"])
    index.hnsw.efConstruction = params["ef_construction"]
  else:
    quantizer = faiss.IndexFlatL2(dim)
    if index_type == "ivf":
      index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_L2)
    else:
      index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["pq_m"],
                               params["pq_nbits"])
      index.pq.cp.seed = seed
      index.pq.cp.min_points_per_centroid = 1
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # Small databases: no warnings, still deterministic.
    train = int(params["train_size"])
    index.cp.max_points_per_centroid = max(256, -(-train // params["nlist"]))  # No resampling.
    sample = x
    if train < len(x):
      sample = x[np.sort(np.random.default_rng(seed).choice(len(x), train, replace=False))]
    index.train(sample)
  index.add(x)
  set_search_params(index, index_type, params)
  return index


def set_search_params(index, index_type: str, params: Mapping) -> None:
  """Applies the search-time parameters (IVF nprobe, HNSW efSearch) to a FAISS index."""
  if index_type in ("ivf", "ivfpq"):
    index.nprobe = int(params["nprobe"])
  elif index_type == "hnsw":
    index.hnsw.efSearch = int(params["ef_search"])


def sorted_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """FAISS search with each row re-sorted by (distance, database row), as evaluation ranks."""
  distances, indices = index.search(np.ascontiguousarray(queries, np.float32), k)
  indices = indices.astype(np.int64)
  order = np.lexsort((indices, distances), axis=1)
  return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)


# --------------------------------------------------------------------------------------- writing


def write_index(directory: str, *, descriptors: np.ndarray, images: Mapping[str, np.ndarray],
                weights: Mapping[str, np.ndarray], model_config, preprocessing: Mapping,
                index_type: str = "flat", params: Mapping | None = None, pca=None,
                pca_dim: int = 0, step: int | None = None, checkpoint: str = "",
                seed: int = 0, extra: Mapping | None = None) -> dict:
  """Builds the FAISS index over `descriptors` and writes the index directory (except
  descriptors/, written by the export while describing). Returns the manifest.

  Args:
    directory: the index directory (local path or URL).
    descriptors: (N, D) raw descriptors of the database images, in image order.
    images: keys, paths, cities (N,) str; utm (N, 2); heading (N,).
    weights: `weights_arrays` of the network.
    model_config: config.model of the network.
    preprocessing: `preprocessing_record` of the images.
    index_type: one of INDEX_TYPES.
    params: resolved index parameters (`index_params`); None: the defaults.
    pca: a `gcl_jax.evaluation.PCAWhitening` applied before indexing, or None.
    pca_dim: its output dimension.
    step, checkpoint: where the weights come from (recorded).
    seed: k-means seed of the IVF types.
    extra: more fields recorded under "export" (e.g. the cities and split).
  """
  descriptors = np.asarray(descriptors, np.float32)
  n, raw_dim = descriptors.shape
  for name, kind in _IMAGE_FIELDS.items():
    if name not in images or len(images[name]) != n:
      raise ValueError(f"images[{name!r}] must have {n} rows (one per descriptor)")
  searched = pca.apply(descriptors, pca_dim) if pca is not None else descriptors
  dim = searched.shape[1]
  params = dict(index_params(index_type, n, dim) if params is None else params)
  index = build_faiss_index(searched, index_type, params, seed=seed)
  import faiss  # pylint: disable=g-import-not-at-top
  io.atomic_write_with(io.join(directory, INDEX_FILE),  # streamed: no copy of the index in memory
                       lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
  write_npz(io.join(directory, IMAGES_FILE), {
      "keys": np.asarray(images["keys"], str), "paths": np.asarray(images["paths"], str),
      "cities": np.asarray(images["cities"], str),
      "utm": np.asarray(images["utm"], np.float64).reshape(n, 2),
      "heading": np.asarray(images["heading"], np.float64)})
  weights = {k: np.asarray(v) for k, v in weights.items()}
  sha = weights_sha256(weights)
  write_npz(io.join(directory, MODEL_FILE), weights)
  pca_record = None
  if pca is not None:
    write_npz(io.join(directory, PCA_FILE), {
        "mean": pca.mean, "projection": pca.projection[:pca_dim],
        "eigenvalues": pca.eigenvalues})
    pca_record = {"file": PCA_FILE, "dim": int(pca_dim), "input_dim": int(raw_dim),
                  "fit_set": pca.fit_set, "num_fit": int(pca.num_fit),
                  "num_tiny": int(pca.num_tiny), "tiny": pca.tiny}
  model = model_record(model_config, sha)
  preprocessing = cache.plain(dict(preprocessing))
  manifest = {
      "format": FORMAT, "version": VERSION,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "num_images": int(n),
      "index": {"file": INDEX_FILE, "type": index_type, "params": params, "metric": "l2",
                "dim": int(dim), "seed": int(seed)},
      "descriptor_dim": int(raw_dim),
      "images": {"file": IMAGES_FILE, "cities": sorted(set(np.asarray(images["cities"]).tolist()))},
      "model": {"file": MODEL_FILE, "config": cache.plain(model_config),
                "weights_sha256": sha, "step": None if step is None else int(step),
                "checkpoint": checkpoint},
      "preprocessing": preprocessing,
      "pca": pca_record,
      "fingerprint": fingerprint(model, preprocessing),
      "export": cache.plain(dict(extra or {})),
  }
  io.write_json(io.join(directory, MANIFEST), manifest)
  return manifest


# --------------------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Matches:
  """The k nearest database images of each query photo, best first.

  Attributes:
    indices: (Q, k) int64 database rows (-1 in an empty slot of an approximate index).
    distances: (Q, k) float32 squared L2 distances (+inf in an empty slot).
    keys: (Q, k) str image keys ("" in an empty slot).
    paths: (Q, k) str image paths.
    positions: (Q, k, 2) float64 UTM (east, north) in metres (NaN in an empty slot).
    headings: (Q, k) float64 compass headings in degrees.
  """

  indices: np.ndarray
  distances: np.ndarray
  keys: np.ndarray
  paths: np.ndarray
  positions: np.ndarray
  headings: np.ndarray

  def estimate_top1(self) -> np.ndarray:
    """(Q, 2) position estimate: the first match's position."""
    return self.positions[:, 0].copy()

  def estimate_weighted(self, eps: float = 1e-6) -> np.ndarray:
    """(Q, 2) position estimate: the mean of the k positions weighted by 1 / (distance + eps)."""
    w = self.weights(eps)
    pos = np.where(np.isfinite(self.positions), self.positions, 0.0)
    return np.einsum("qk,qkc->qc", w, pos)

  def weights(self, eps: float = 1e-6) -> np.ndarray:
    """(Q, k) weights of `estimate_weighted` (rows sum to 1; 0 for empty slots)."""
    valid = self.indices >= 0
    w = np.where(valid, 1.0 / (np.where(valid, self.distances, 0.0).astype(np.float64) + eps), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def _require(cond: bool, path: str, message: str) -> None:
  if not cond:
    raise IndexFormatError(f"{path}: {message}")


def read_manifest(directory: str) -> dict:
  """The checked manifest of an index directory (IndexFormatError naming the field at fault)."""
  path = io.join(directory, MANIFEST)
  if not io.exists(directory):
    raise IndexFormatError(f"{directory}: no such index directory")
  if not io.exists(path):
    raise IndexFormatError(f"{path}: missing; {directory} is not an index directory written by "
                           "--mode=export")
  try:
    manifest = io.read_json(path)
  except Exception as e:  # pylint: disable=broad-except
    raise IndexFormatError(f"{path}: not valid JSON ({e})") from e
  _require(isinstance(manifest, dict) and manifest.get("format") == FORMAT, path,
           f"field 'format' must be {FORMAT!r}, got "
           f"{manifest.get('format') if isinstance(manifest, dict) else manifest!r}")
  _require(manifest.get("version") == VERSION, path,
           f"field 'version' is {manifest.get('version')!r}; this gcl-jax reads version {VERSION}")
  required = {"num_images": int, "index": dict, "model": dict, "preprocessing": dict,
              "fingerprint": dict, "descriptor_dim": int}
  for key, kind in required.items():
    _require(isinstance(manifest.get(key), kind), path,
             f"field {key!r} missing or not a {kind.__name__}")
  for key in ("type", "params", "dim"):
    _require(key in manifest["index"], path, f"field 'index.{key}' missing")
  _require(manifest["index"]["type"] in INDEX_TYPES, path,
           f"field 'index.type' = {manifest['index']['type']!r} is not one of {INDEX_TYPES}")
  for key in ("config", "weights_sha256"):
    _require(key in manifest["model"], path, f"field 'model.{key}' missing")
  for key in PREPROCESSING_KEYS:
    _require(key in manifest["preprocessing"], path, f"field 'preprocessing.{key}' missing")
  for key in ("model", "preprocessing"):
    _require(key in manifest["fingerprint"], path, f"field 'fingerprint.{key}' missing")
  model = model_record(manifest["model"]["config"], manifest["model"]["weights_sha256"])
  actual = fingerprint(model, manifest["preprocessing"])
  for key in ("model", "preprocessing"):
    _require(actual[key] == manifest["fingerprint"][key], path,
             f"field 'fingerprint.{key}' does not match the recorded {key} (the manifest was "
             "edited or mixed from two exports)")
  return manifest


class PlaceIndex:
  """A loaded index directory: search by descriptors, or by photos with the recorded model.

  Attributes:
    directory: where it was loaded from.
    manifest: the checked manifest.json.
    keys, paths, cities: (N,) str per database image; utm: (N, 2); heading: (N,).
    faiss_index: the FAISS index.
  """

  def __init__(self, directory: str, manifest: dict, faiss_index, images: dict, pca):
    self.directory, self.manifest, self.faiss_index = directory, manifest, faiss_index
    self.keys, self.paths = images["keys"], images["paths"]
    self.cities, self.utm, self.heading = images["cities"], images["utm"], images["heading"]
    self.pca = pca
    self._embedder = None

  def __len__(self) -> int:
    return int(self.faiss_index.ntotal)

  @property
  def index_type(self) -> str:
    return self.manifest["index"]["type"]

  @property
  def preprocessing(self) -> dict:
    return dict(self.manifest["preprocessing"])

  @property
  def model_config(self) -> dict:
    return dict(self.manifest["model"]["config"])

  def __repr__(self) -> str:
    return (f"PlaceIndex({self.directory!r}, {len(self)} images, {self.index_type}, "
            f"dim {self.manifest['index']['dim']})")

  def set_search_params(self, **overrides) -> None:
    """Changes search-time parameters: nprobe (IVF types) or ef_search (HNSW)."""
    params = {**self.manifest["index"]["params"], **overrides}
    set_search_params(self.faiss_index, self.index_type, params)
    self.manifest["index"]["params"] = params

  def check_fingerprint(self, model: Mapping | None = None,
                        preprocessing: Mapping | None = None) -> None:
    """Raises IndexMismatchError unless the records match this index's (see module doc)."""
    check_fingerprint(self.manifest, model, preprocessing, where=self.directory)

  def project(self, descriptors: np.ndarray) -> np.ndarray:
    """Raw network descriptors -> the searched space (PCA-whitened when the index is)."""
    d = np.asarray(descriptors, np.float32)
    if d.ndim != 2 or d.shape[1] != self.manifest["descriptor_dim"]:
      raise ValueError(f"descriptors must have shape (N, {self.manifest['descriptor_dim']}) "
                       f"(the network's output of {self.directory}), got {d.shape}")
    if self.pca is not None:
      d = self.pca.apply(d, self.manifest["pca"]["dim"])
    return d

  def search_descriptors(self, descriptors: np.ndarray, k: int) -> Matches:
    """The k nearest database images of raw network descriptors (N, descriptor_dim)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"k must be a positive integer, got {k!r}")
    queries = self.project(descriptors)
    k = int(min(k, len(self)))
    distances, indices = sorted_search(self.faiss_index, queries, k)
    valid = indices >= 0
    safe = np.where(valid, indices, 0)
    pick = lambda a, fill: np.where(valid, a[safe], fill)
    positions = np.where(valid[..., None], self.utm[safe], np.nan)
    return Matches(indices=indices, distances=np.where(valid, distances, np.inf).astype(np.float32),
                   keys=pick(self.keys, ""), paths=pick(self.paths, ""), positions=positions,
                   headings=pick(self.heading, np.nan))

  def describe(self, images, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Raw descriptors of photos (paths, or an (N, H, W, 3) uint8 array / list of arrays of any
    size) with the index's own network and preprocessing."""
    if self._embedder is None:
      from gcl_jax.localize import describe as describe_lib  # pylint: disable=g-import-not-at-top
      self._embedder = describe_lib.Embedder.from_index(self)
    return self._embedder.describe(images, batch_size=batch_size, progress=progress)

  def search(self, images, k: int = 10, *, batch_size: int = 32) -> Matches:
    """The k nearest database images of each photo (paths or arrays; see `describe`)."""
    return self.search_descriptors(self.describe(images, batch_size=batch_size), k)


def read_faiss(path: str):
  import faiss  # pylint: disable=g-import-not-at-top
  if not io.exists(path):
    raise IndexFormatError(f"{path}: missing (the FAISS index)")
  with io.open(path, "rb") as f:  # streamed: the file is never held in memory beside the index
    try:
      return faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except Exception as e:  # pylint: disable=broad-except
      first = str(e).strip().splitlines()
      size = f.seek(0, 2)
      raise IndexFormatError(f"{path}: not a readable FAISS index ({size} bytes; "
                             f"{first[-1] if first else type(e).__name__})") from e


def load_weights(directory: str, manifest: Mapping) -> dict[str, np.ndarray]:
  """model.npz of an index directory, checked against the manifest's weights_sha256."""
  path = io.join(directory, manifest["model"].get("file", MODEL_FILE))
  weights = read_npz(path, "the network's weights")
  sha = weights_sha256(weights)
  if sha != manifest["model"]["weights_sha256"]:
    raise IndexMismatchError(f"{path}: weights SHA-256 {sha[:16]}... differs from the manifest's "
                             f"model.weights_sha256 {manifest['model']['weights_sha256'][:16]}...: "
                             "these weights belong to another model; re-export the index")
  return weights


def load_index(directory: str, *, check_weights: bool = True) -> PlaceIndex:
  """Loads and checks an index directory written by --mode=export.

  Args:
    directory: the index directory (local path or URL).
    check_weights: also read model.npz and check it against the fingerprint (photos can only be
      searched with those weights; False for descriptor-only use).

  Raises:
    IndexFormatError: a missing, unreadable or inconsistent file (named, with the field).
    IndexMismatchError: weights that are not those of the fingerprint.
  """
  directory = str(directory)
  manifest = read_manifest(directory)
  n = manifest["num_images"]
  index_path = io.join(directory, manifest["index"].get("file", INDEX_FILE))
  faiss_index = read_faiss(index_path)
  _require(faiss_index.ntotal == n, index_path,
           f"holds {faiss_index.ntotal} vectors but manifest field 'num_images' is {n}")
  _require(faiss_index.d == manifest["index"]["dim"], index_path,
           f"has dimension {faiss_index.d} but manifest field 'index.dim' is "
           f"{manifest['index']['dim']}")
  set_search_params(faiss_index, manifest["index"]["type"], manifest["index"]["params"])
  images_path = io.join(directory, manifest.get("images", {}).get("file", IMAGES_FILE))
  images = read_npz(images_path, "the database images' keys, paths and positions")
  for name, kind in _IMAGE_FIELDS.items():
    _require(name in images, images_path, f"array {name!r} missing")
    _require(images[name].dtype.kind == kind, images_path,
             f"array {name!r} has dtype {images[name].dtype}, expected kind {kind!r}")
    _require(len(images[name]) == n, images_path,
             f"array {name!r} has {len(images[name])} rows but the index holds {n} images")
  _require(images["utm"].shape == (n, 2), images_path,
           f"array 'utm' must have shape ({n}, 2), got {images['utm'].shape}")
  pca = None
  if manifest.get("pca"):
    pca = _load_pca(directory, manifest)
  if check_weights:
    load_weights(directory, manifest)
  return PlaceIndex(directory, manifest, faiss_index, images, pca)


def _load_pca(directory: str, manifest: Mapping):
  from gcl_jax.evaluation.pca import PCAWhitening  # pylint: disable=g-import-not-at-top
  record = manifest["pca"]
  path = io.join(directory, record.get("file", PCA_FILE))
  arrays = read_npz(path, "the PCA-whitening")
  for name in ("mean", "projection", "eigenvalues"):
    _require(name in arrays, path, f"array {name!r} missing")
  raw, dim = manifest["descriptor_dim"], record["dim"]
  _require(arrays["mean"].shape == (raw,), path,
           f"array 'mean' has shape {arrays['mean'].shape}, expected ({raw},)")
  _require(arrays["projection"].shape == (dim, raw), path,
           f"array 'projection' has shape {arrays['projection'].shape}, expected ({dim}, {raw}) "
           "(manifest fields 'pca.dim', 'descriptor_dim')")
  _require(dim == manifest["index"]["dim"], path,
           f"manifest field 'pca.dim' = {dim} differs from 'index.dim' = "
           f"{manifest['index']['dim']}")
  return PCAWhitening(mean=arrays["mean"], projection=arrays["projection"],
                      eigenvalues=arrays["eigenvalues"], fit_set=record["fit_set"],
                      num_fit=record["num_fit"], num_tiny=record["num_tiny"], tiny=record["tiny"])


"""On-disk cache of descriptors, keyed by everything that determines them.

The key is the SHA-256 of a canonical JSON of: the checkpoint (path and step), the model config,
the image size, and the image tables (root, name, relative paths and keys of every row). Changing
any of them gives another key, so a stale descriptor file is never reused; an unchanged evaluation
(e.g. the same checkpoint evaluated under two protocols) reads the file instead of re-extracting.

Files: `<directory>/<key>.npy` (float32 descriptors, rows in table order) and `<key>.json` (the
keyed fields and the shape, for humans). Writes are atomic: the data goes to a temporary file in
the same directory, is flushed and fsynced, then renamed over the target (`os.replace`), the .npy
before the .json; a reader only trusts a .npy whose .json exists, so a crash mid-write leaves no
half file to be read. Local file systems only (os.replace is not atomic on object stores).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gcl_jax.types import ImageTable

KEY_VERSION = 1  # Bump when the descriptor layout or the key recipe changes.


def _plain(value: Any) -> Any:
  """Converts configs (ConfigDict, dataclass-like mappings), numpy values and tuples to JSON."""
  if hasattr(value, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (os.PathLike,)):
    return os.fspath(value)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise TypeError(f"cannot key a descriptor cache on {value!r} of type {type(value).__name__}")


def _table_digest(table: ImageTable) -> dict:
  h = hashlib.sha256()
  for column in (table.paths, table.keys):
    for item in np.asarray(column).tolist():
      h.update(str(item).encode())
      h.update(b"\0")
    h.update(b"\1")
  return {"root": table.root, "name": table.name, "rows": len(table), "sha256": h.hexdigest()}


def cache_fields(*, checkpoint: str | os.PathLike | None, step: int | None,
                 model_config: Any, image_size: Sequence[int] | int,
                 tables: Sequence[ImageTable], extra: Mapping | None = None) -> dict:
  """The keyed fields, as a JSON-ready dict (what `cache_key` hashes).

  Args:
    checkpoint: checkpoint directory or file (None for untrained / baseline descriptors).
    step: training step of the checkpoint (None when unknown).
    model_config: the model's config (ConfigDict or mapping), e.g. `config.model`.
    image_size: evaluation image size, (H, W) or one int.
    tables: the image tables described, in the order their descriptors are concatenated.
    extra: anything else that changes the descriptors (e.g. {"whitening": ...}).

  Raises:
    TypeError: a value that cannot be turned into JSON.
    ValueError: no tables.
  """
  if not tables:
    raise ValueError("tables is empty: a descriptor cache entry describes at least one table")
  return {
      "version": KEY_VERSION,
      "checkpoint": None if checkpoint is None else os.path.abspath(os.fspath(checkpoint)),
      "step": None if step is None else int(step),
      "model_config": _plain(model_config),
      "image_size": _plain(image_size),
      "tables": [_table_digest(t) for t in tables],
      "extra": _plain(extra or {}),
  }


def cache_key(**fields) -> str:
  """SHA-256 hex digest of `cache_fields(**fields)` (canonical JSON, sorted keys)."""
  text = json.dumps(cache_fields(**fields), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: str, write: Callable[[Any], None], mode: str) -> None:
  directory = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class DescriptorCache:
  """Descriptor files in one directory, keyed by `cache_key`."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = os.fspath(directory)

  def paths(self, key: str) -> tuple[str, str]:
    """(descriptor .npy path, metadata .json path) of `key`."""
    if not (len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
      raise ValueError(f"cache key must be a 64-character SHA-256 hex digest, got {key!r}")
    base = os.path.join(self.directory, key)
    return base + ".npy", base + ".json"

  def load(self, key: str) -> np.ndarray | None:
    """The cached descriptors of `key`, or None when absent (or the write never completed)."""
    npy, meta = self.paths(key)
    if not (os.path.exists(npy) and os.path.exists(meta)):
      return None
    with open(meta) as f:
      shape = tuple(json.load(f)["shape"])
    desc = np.load(npy, allow_pickle=False)
    if desc.shape != shape:
      raise ValueError(f"descriptor cache {npy}: shape {desc.shape} does not match its metadata "
                       f"{shape}; delete both files")
    return desc

  def save(self, key: str, descriptors: np.ndarray, fields: Mapping | None = None) -> str:
    """Writes the descriptors of `key` atomically; returns the .npy path."""
    desc = np.asarray(descriptors, np.float32)
    if desc.ndim != 2:
      raise ValueError(f"descriptors must be 2-D (N, D), got shape {desc.shape}")
    os.makedirs(self.directory, exist_ok=True)
    npy, meta = self.paths(key)
    _atomic_write(npy, lambda f: np.save(f, desc, allow_pickle=False), "wb")
    record = {"key": key, "shape": list(desc.shape), "dtype": "float32",
              "fields": _plain(fields or {})}
    _atomic_write(meta, lambda f: f.write(json.dumps(record, indent=1, sort_keys=True)), "w")
    return npy

  def get_or_compute(self, key: str, compute: Callable[[], np.ndarray],
                     fields: Mapping | None = None,
                     expected_rows: int | None = None) -> tuple[np.ndarray, bool]:
    """Cached descriptors of `key`, computing and storing them on a miss.

    Args:
      key: from `cache_key`.
      compute: returns the (N, D) descriptors.
      fields: stored in the metadata (e.g. `cache_fields(...)`).
      expected_rows: when given, a cached or computed array with another row count raises.

    Returns:
      (descriptors, hit): hit is True when read from disk.
    """
    desc = self.load(key)
    hit = desc is not None
    if not hit:
      desc = np.asarray(compute(), np.float32)
    if expected_rows is not None and desc.shape[0] != expected_rows:
      where = "cached" if hit else "computed"
      raise ValueError(f"{where} descriptors for key {key[:12]}... have {desc.shape[0]} rows, "
                       f"expected {expected_rows}")
    if not hit:
      self.save(key, desc, fields)
    return desc, hit

"""On-disk cache of descriptors, keyed by everything that determines them.

The key is the SHA-256 of a canonical JSON of: the checkpoint (path and step), the model config,
the image size, and the image tables (root, name, relative paths and keys of every row). Changing
any of them gives another key, so a stale descriptor file is never reused; an unchanged evaluation
(e.g. the same checkpoint evaluated under two protocols) reads the file instead of re-extracting.

Files: `<directory>/<key>.npy` (float32 descriptors, rows in table order) and `<key>.json` (the
keyed fields and the shape, for humans). The directory may be local or a URL (gs://...): files go
through `gcl_jax.io`, written with its atomic write (locally a temporary file renamed over the
target, in a bucket one upload), the .npy before the .json; a reader only trusts a .npy whose .json
exists, so a crash mid-write leaves no half file to be read.
"""

from __future__ import annotations

import hashlib
import io as io_lib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.types import ImageTable

KEY_VERSION = 1  # Bump when the descriptor layout or the key recipe changes.


def plain(value: Any) -> Any:
  """Converts configs (ConfigDict, dataclass-like mappings), numpy values and tuples to JSON."""
  if hasattr(value, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return plain(value.tolist())
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
      "checkpoint": None if checkpoint is None else gcl_io.absolute(checkpoint),
      "step": None if step is None else int(step),
      "model_config": plain(model_config),
      "image_size": plain(image_size),
      "tables": [_table_digest(t) for t in tables],
      "extra": plain(extra or {}),
  }


def cache_key(**fields) -> str:
  """SHA-256 hex digest of `cache_fields(**fields)` (canonical JSON, sorted keys)."""
  text = json.dumps(cache_fields(**fields), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


class DescriptorCache:
  """Descriptor files in one directory (local or URL), keyed by `cache_key`."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = os.fspath(directory)

  def paths(self, key: str) -> tuple[str, str]:
    """(descriptor .npy path, metadata .json path) of `key`."""
    if not (len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
      raise ValueError(f"cache key must be a 64-character SHA-256 hex digest, got {key!r}")
    base = gcl_io.join(self.directory, key)
    return base + ".npy", base + ".json"

  def load(self, key: str) -> np.ndarray | None:
    """The cached descriptors of `key`, or None when absent (or the write never completed)."""
    npy, meta = self.paths(key)
    if not (gcl_io.exists(npy) and gcl_io.exists(meta)):
      return None
    shape = tuple(gcl_io.read_json(meta)["shape"])
    desc = np.load(io_lib.BytesIO(gcl_io.read_bytes(npy)), allow_pickle=False)
    if desc.shape != shape:
      raise ValueError(f"descriptor cache {npy}: shape {desc.shape} does not match its metadata "
                       f"{shape}; delete both files")
    return desc

  def save(self, key: str, descriptors: np.ndarray, fields: Mapping | None = None) -> str:
    """Writes the descriptors of `key` atomically; returns the .npy path."""
    desc = np.asarray(descriptors, np.float32)
    if desc.ndim != 2:
      raise ValueError(f"descriptors must be 2-D (N, D), got shape {desc.shape}")
    gcl_io.makedirs(self.directory)
    npy, meta = self.paths(key)
    gcl_io.atomic_write_with(npy, lambda f: np.save(f, desc, allow_pickle=False))
    record = {"key": key, "shape": list(desc.shape), "dtype": "float32",
              "fields": plain(fields or {})}
    gcl_io.atomic_write(meta, json.dumps(record, indent=1, sort_keys=True))
    return npy

  def get_or_compute(self, key: str, compute: Callable[[], np.ndarray],
                     fields: Mapping | None = None,
                     expected_rows: int | None = None, *,
                     agree: Callable[[bool], bool] = bool,
                     write: bool = True) -> tuple[np.ndarray, bool]:
    """Cached descriptors of `key`, computing and storing them on a miss.

    Args:
      key: from `cache_key`.
      compute: returns the (N, D) descriptors.
      fields: stored in the metadata (e.g. `cache_fields(...)`).
      expected_rows: when given, a cached or computed array with another row count raises.
      agree: maps this process's "found on disk" to the decision every process takes; in a
        multi-process run (computing is collective) `gcl_jax.parallel.agree`: process 0's finding.
      write: store a computed array (in a multi-process run: on process 0 only).

    Returns:
      (descriptors, hit): hit is True when read from disk.
    """
    desc = self.load(key)
    hit = agree(desc is not None)
    if hit and desc is None:  # process 0 found the files: written since this process looked
      desc = self.load(key)
      if desc is None:
        raise FileNotFoundError(f"descriptor cache {self.paths(key)[0]} exists for process 0 but "
                                f"not for this one: is {self.directory} on storage that every "
                                "host sees?")
    if not hit:
      desc = np.asarray(compute(), np.float32)
    if expected_rows is not None and desc.shape[0] != expected_rows:
      where = "cached" if hit else "computed"
      raise ValueError(f"{where} descriptors for key {key[:12]}... have {desc.shape[0]} rows, "
                       f"expected {expected_rows}")
    if not hit and write:
      self.save(key, desc, fields)
    return desc, hit

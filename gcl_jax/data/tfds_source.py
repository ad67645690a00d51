"""Training and evaluation from a prepared GCL TFDS dataset (`gcl_msls`, `gcl_at_format`).

A user builds the dataset once from a local copy (`python -m gcl_jax.data.tfds_builders ...`, see
`gcl_jax.data.tfds_builders`) and then reads it, from local disk or gs://, with `TfdsSource`:

    source = TfdsSource("gcl_msls", data_dir="gs://bucket/tfds", cache_dir="/tmp/gcl_tfds")
    query, database = source.city("cph")          # ImageTables, MSLS CSV row order
    batches = pipeline.pair_batches(p0, p1, y, ..., reader=source.read)

Tables are rebuilt from the examples' metadata (key, utm, heading, pano, night, in_all), placed by
their stored `index`, so row order is the MSLS CSV order and label tables index them correctly.
Their `paths` are synthetic, `<split>/<index>` under the root `tfds://<name>/<version>`, so that
`ImageTable.full_paths()` gives `tfds://gcl_msls/1.0.0/cph_query/12`; `TfdsSource.read` maps such
a path to the image's encoded bytes, exactly as stored (the file's bytes, never re-encoded). The
pipeline then decodes them with the same code as files (`pipeline.read_resized`), so the images
are identical.

TFRecord files have no random access, so a split's bytes are materialised once into a
random-access store: in memory (`cache_dir=None`; memory = the sum of the JPEG file sizes) or in
a flat file on local disk under `cache_dir`, memory-mapped (the page cache then holds what is
hot; restarts reuse the file and skip TFRecord reading altogether). Cached files are
`<cache_dir>/<name>/<version>/<split>.bin` (the bytes, concatenated) and `<split>.npz` (start,
length and the metadata columns), written atomically, the .npz last. Every host of a multi-host
job materialises every split it trains on (pairs reach any image). Measured on 2 shared cores
(benchmarks/input_pipeline.py, `tfds_materialise` line): 160 JPEGs of 1024x768 (54 MB) load into
memory in 0.52 s (~300 images/s, ~100 MB/s, from local TFRecords), write the disk cache in 0.43 s
and reopen from it in 3 ms; peak RSS grew by at most 162 MB (an upper bound: it includes TF's
reader buffers). Streaming from the store costs the same as from files (`ratio_tfds` ~ `ratio`).

`read_tfds_tables` reads metadata only (the bytes pass through and are dropped).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

import numpy as np

from gcl_jax.types import DatasetError
from gcl_jax.types import ImageTable

SCHEME = "tfds://"
_META = ("key", "path", "split", "city", "side")


class _ByteStore:
  """Encoded images of one split, addressed by row index: buffer[start[i]:start[i] + length[i]]."""

  def __init__(self, buffer: np.ndarray, start: np.ndarray, length: np.ndarray):
    self.buffer, self.start, self.length = buffer, start, length

  def __len__(self) -> int:
    return len(self.start)

  def get(self, i: int) -> bytes:
    s = int(self.start[i])
    return self.buffer[s:s + int(self.length[i])].tobytes()

  @property
  def nbytes(self) -> int:
    return int(self.length.sum())


class TfdsSource:
  """A prepared GCL TFDS dataset: ImageTables from its metadata, image bytes by `tfds://` path.

  Attributes:
    name: TFDS dataset name ("gcl_msls" or "gcl_at_format").
    data_dir: TFDS data_dir the dataset was built into (local or gs://); None: TFDS's default.
    cache_dir: local folder for the materialised bytes (memory-mapped); None: keep them in memory.
    root: table root of this source's paths, "tfds://<name>/<version>" (the descriptor cache keys
      on it).
    load_seconds: seconds spent materialising each split (reading TFRecords or the cache).
  """

  def __init__(self, name: str = "gcl_msls", data_dir: str | None = None,
               cache_dir: str | None = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    # Importing the builders registers them with tfds.
    import gcl_jax.data.tfds_builders  # pylint: disable=g-import-not-at-top,unused-import
    self.name, self.data_dir, self.cache_dir = name, data_dir, cache_dir
    try:
      self.builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except
      raise DatasetError(f"TFDS dataset {name!r} in data_dir {data_dir!r}: {e}") from e
    if not self.builder.info.splits:
      raise DatasetError(f"TFDS dataset {name!r} is not prepared in data_dir {data_dir!r} "
                         f"(looked in {self.builder.data_dir}); build it first with "
                         f"`python -m gcl_jax.data.tfds_builders {name} --manual_dir=... "
                         f"--data_dir=...`")
    self.root = f"{SCHEME}{name}/{self.builder.version}"
    self.load_seconds: dict[str, float] = {}
    self._stores: dict[str, _ByteStore] = {}
    self._tables: dict[str, ImageTable] = {}
    self._lock = threading.Lock()

  @property
  def splits(self) -> list[str]:
    """The dataset's split names (gcl_msls: `<city>_<side>`)."""
    return sorted(self.builder.info.splits)

  @property
  def nbytes(self) -> int:
    """Encoded bytes materialised so far (in memory or memory-mapped)."""
    return sum(s.nbytes for s in self._stores.values())

  def _check_split(self, split: str) -> int:
    if split not in self.builder.info.splits:
      raise DatasetError(f"TFDS dataset {self.name!r} ({self.builder.data_dir}) has no split "
                         f"{split!r}; it has {self.splits}")
    return int(self.builder.info.splits[split].num_examples)

  def table(self, split: str, *, with_images: bool = True) -> ImageTable:
    """ImageTable of one TFDS split; `with_images` also materialises its bytes for `read`."""
    with self._lock:
      if split in self._tables and (split in self._stores or not with_images):
        return self._tables[split]
      n = self._check_split(split)
      t0 = time.perf_counter()
      cached = self._cache_paths(split)
      if with_images and cached and os.path.exists(cached[1]):
        meta, store = self._load_cache(split, n, *cached)
      else:
        meta, store = self._read_split(split, n, with_images, cached)
      self.load_seconds[split] = time.perf_counter() - t0
      if store is not None:
        self._stores[split] = store
      self._tables[split] = self._make_table(split, meta)
      return self._tables[split]

  def city(self, city: str, split: str = "train_val", *, with_images: bool = True
           ) -> tuple[ImageTable, ImageTable]:
    """(query, database) tables of one gcl_msls city; `split` is the MSLS split it must be in."""
    out = []
    for side in ("query", "database"):
      table = self.table(f"{city}_{side}", with_images=with_images)
      if table.name.split("/")[0] != split:
        raise DatasetError(f"TFDS split {city}_{side} of {self.name!r}: examples have split "
                           f"{table.name.split('/')[0]!r}, expected {split!r}")
      out.append(table)
    return out[0], out[1]

  def read(self, path: str) -> bytes:
    """Encoded bytes of `tfds://<name>/<version>/<split>/<index>`; the split must be loaded."""
    if not path.startswith(self.root + "/"):
      raise KeyError(f"{path}: not a path of {self.root}")
    split, _, index = path[len(self.root) + 1:].rpartition("/")
    store = self._stores.get(split)
    if store is None:
      raise KeyError(f"{path}: split {split!r} is not loaded (TfdsSource.table or .city with "
                     "with_images=True loads it)")
    try:
      i = int(index)
    except ValueError:
      raise KeyError(f"{path}: index {index!r} is not an integer") from None
    if not 0 <= i < len(store):
      raise KeyError(f"{path}: index {i} out of range, split {split!r} has {len(store)} images")
    return store.get(i)

  # ------------------------------------------------------------------------------------ internals

  def _make_table(self, split: str, meta: dict[str, np.ndarray]) -> ImageTable:
    kinds = {k: sorted(set(meta[k].tolist())) for k in ("split", "city", "side")}
    for k, values in kinds.items():
      if len(values) > 1:
        raise DatasetError(f"TFDS split {split!r} of {self.name!r} mixes {k} values {values}")
    name = "/".join(v[0] if v else "" for v in kinds.values())
    n = len(meta["key"])
    return ImageTable(root=self.root, name=name,
                      paths=np.array([f"{split}/{i}" for i in range(n)], dtype=str),
                      keys=meta["key"].astype(str), utm=meta["utm"].astype(np.float64),
                      heading=meta["heading"].astype(np.float64), pano=meta["pano"].astype(bool),
                      night=meta["night"].astype(bool), in_all=meta["in_all"].astype(bool))

  def _cache_paths(self, split: str) -> tuple[str, str] | None:
    if not self.cache_dir:
      return None
    d = os.path.join(self.cache_dir, self.name, str(self.builder.version))
    return os.path.join(d, f"{split}.bin"), os.path.join(d, f"{split}.npz")

  def _read_split(self, split: str, n: int, with_images: bool, cached: tuple[str, str] | None
                  ) -> tuple[dict[str, np.ndarray], _ByteStore | None]:
    """One pass over the TFRecords: metadata columns (in index order) and the bytes."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    ds = self.builder.as_dataset(split=split, shuffle_files=False,
                                 decoders={"image": tfds.decode.SkipDecoding()})
    if not with_images:
      ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != "image"})
    cols = {k: [] for k in (*_META, "index", "utm", "heading", "pano", "night", "in_all")}
    start, length = np.zeros(n, np.int64), np.zeros(n, np.int64)
    out, tmp, buffer, offset = None, None, bytearray(), 0
    if with_images and cached:
      os.makedirs(os.path.dirname(cached[0]), exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cached[0]), suffix=".bin.tmp")
      out = os.fdopen(fd, "wb")
    try:
      for row, ex in enumerate(tfds.as_numpy(ds)):
        if row >= n:
          raise DatasetError(f"TFDS split {split!r} of {self.name!r}: more examples than the "
                             f"{n} its metadata lists")
        for k in cols:
          cols[k].append(ex[k])
        if with_images:
          data = ex["image"]
          start[row], length[row] = offset, len(data)
          offset += len(data)
          (out.write if out else buffer.extend)(data)
      if out:
        out.close()
      meta = self._order(split, n, cols)
      if cached and with_images:
        order = np.asarray(cols["index"], np.int64).argsort()
        os.replace(tmp, cached[0])
        _atomic_savez(cached[1], start=start[order], length=length[order], **meta)
    except BaseException:
      if out:
        out.close()
      if tmp and os.path.exists(tmp):
        os.remove(tmp)
      raise
    if not with_images:
      return meta, None
    order = np.asarray(cols["index"], np.int64).argsort()
    start, length = start[order], length[order]
    if cached:
      return meta, _ByteStore(np.memmap(cached[0], np.uint8, "r") if offset else
                              np.zeros(0, np.uint8), start, length)
    return meta, _ByteStore(np.frombuffer(buffer, np.uint8), start, length)

  def _order(self, split: str, n: int, cols: dict[str, list]) -> dict[str, np.ndarray]:
    """Metadata columns sorted by the stored row index; checks it is exactly 0..n-1."""
    index = np.asarray(cols["index"], np.int64)
    if len(index) != n or not np.array_equal(np.sort(index), np.arange(n)):
      raise DatasetError(f"TFDS split {split!r} of {self.name!r}: example indices are not "
                         f"0..{n - 1} ({len(index)} examples read, metadata says {n})")
    order = index.argsort()
    meta = {}
    for k, v in cols.items():
      if k == "index":
        continue
      arr = np.asarray(v)
      if k in _META:
        arr = np.array([x.decode() for x in v], dtype=str)
      meta[k] = arr[order].reshape((n, 2) if k == "utm" else (n,))
    return meta

  def _load_cache(self, split: str, n: int, bin_path: str, npz_path: str
                  ) -> tuple[dict[str, np.ndarray], _ByteStore]:
    with np.load(npz_path) as z:
      cols = {k: z[k] for k in z.files}
    start, length = cols.pop("start"), cols.pop("length")
    size = os.path.getsize(bin_path) if os.path.exists(bin_path) else -1
    if len(start) != n or size != int(length.sum()):
      raise DatasetError(f"{npz_path}: cache of TFDS split {split!r} is stale ({len(start)} rows, "
                         f"{size} bytes in {bin_path}; the dataset has {n} rows): delete "
                         f"{os.path.dirname(npz_path)} to rebuild it")
    buffer = np.memmap(bin_path, np.uint8, "r") if size else np.zeros(0, np.uint8)
    return cols, _ByteStore(buffer, start, length)


def _atomic_savez(file: str, /, **arrays) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(file), suffix=".npz.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, file)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read_tfds_tables(name: str, data_dir: str | None, cities: list[str] | tuple[str, ...],
                     split: str = "train_val") -> dict[str, tuple[ImageTable, ImageTable]]:
  """{city: (query, database)} of a prepared gcl_msls dataset, from its metadata only.

  Rows are in MSLS CSV order (placed by the stored index); paths are `tfds://` paths (see the
  module docstring). Use `TfdsSource` to also read the images.
  """
  source = TfdsSource(name, data_dir)
  return {c: source.city(c, split, with_images=False) for c in cities}

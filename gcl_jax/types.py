"""The records every stage passes on: image tables, sparse pair-label tables, user errors.

An `ImageTable` describes one image set (for MSLS: one city's `query` or `database` side); row
order is the on-disk order of the dataset's index (MSLS: CSV order), and label tables index rows
by position, so readers must never reorder.

A `PairTable` holds the sparse labels of one city: (query, database) pairs with psi and a binary
label. Pairs that are not listed have psi = 0 and sim = 0 (negative): a table lists every pair
whose camera centres are within `max(cutoff, neg_dist_m)` metres, so anything absent is far
apart. Rows are sorted by (query, database) and indexed CSR-style through `indptr`.

This module imports numpy only; every stage (labels, data, models, training, evaluation) may
import it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class UserError(Exception):
  """A fault of the user's input (config, dataset, label file, checkpoint), not of the code.

  Its message alone says what is wrong and where (key, file, value): command lines print it as
  one line, without a traceback. Subclasses also derive from the builtin they replace (e.g.
  ValueError) so that callers catching that keep working.
  """


class DatasetError(UserError, ValueError):
  """Raised for malformed dataset files; the message names the file, row and column."""


@dataclasses.dataclass(frozen=True)
class ImageTable:
  """Images of one set, with metadata as parallel numpy arrays of length N.

  Attributes:
    root: dataset root directory (local path or gs:// URL); `paths` are relative to it.
    name: human-readable name, e.g. "train_val/cph/query".
    paths: (N,) str, image paths relative to `root`.
    keys: (N,) str, image keys (MSLS: file stem).
    utm: (N, 2) float64, UTM (east, north) in metres.
    heading: (N,) float64, compass angle in degrees clockwise from north; NaN when unknown.
    pano: (N,) bool, panoramic image (its heading is meaningless).
    night: (N,) bool, taken at night.
    in_all: (N,) bool, member of MSLS subtask `all` (True for datasets without subtasks).
  """

  root: str
  name: str
  paths: np.ndarray
  keys: np.ndarray
  utm: np.ndarray
  heading: np.ndarray
  pano: np.ndarray
  night: np.ndarray
  in_all: np.ndarray

  def __post_init__(self):
    n = len(self.paths)
    for field in ("keys", "heading", "pano", "night", "in_all"):
      if len(getattr(self, field)) != n:
        raise ValueError(f"ImageTable {self.name}: `{field}` has {len(getattr(self, field))} rows, "
                         f"`paths` has {n}")
    if self.utm.shape != (n, 2):
      raise ValueError(f"ImageTable {self.name}: `utm` must have shape ({n}, 2), got {self.utm.shape}")

  def __len__(self) -> int:
    return len(self.paths)

  def full_paths(self) -> list[str]:
    """Absolute image paths (root joined with each relative path)."""
    root = self.root.rstrip("/")
    return [f"{root}/{p}" for p in self.paths]

  def subset(self, idx: np.ndarray) -> ImageTable:
    """The rows `idx` (indices or a boolean mask), in that order."""
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    return ImageTable(**{k: v[idx] if isinstance(v, np.ndarray) else v for k, v in fields.items()})


SIM_NEGATIVE, SIM_POSITIVE, SIM_AMBIGUOUS = 0, 1, -1


@dataclasses.dataclass(frozen=True)
class PairTable:
  """Sparse labels of one city.

  Attributes:
    num_queries, num_database: sizes of the query and database image tables.
    indptr: (num_queries + 1,) int64; pairs of query q are rows indptr[q]:indptr[q+1].
    db_idx: (P,) int32 database index of each listed pair (ascending within a query).
    psi: (P,) float32 graded similarity in [0, 1].
    sim: (P,) int8 binary label: 1 positive, 0 negative, -1 ambiguous (neither).
    dist: (P,) float32 distance between camera centres in metres.
    params: the labelling parameters (for manifests and reports).
  """

  num_queries: int
  num_database: int
  indptr: np.ndarray
  db_idx: np.ndarray
  psi: np.ndarray
  sim: np.ndarray
  dist: np.ndarray
  params: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.indptr.shape != (self.num_queries + 1,):
      raise ValueError(f"indptr must have shape ({self.num_queries + 1},), got {self.indptr.shape}")
    p = int(self.indptr[-1])
    for name in ("db_idx", "psi", "sim", "dist"):
      if getattr(self, name).shape != (p,):
        raise ValueError(f"PairTable.{name} must have shape ({p},), got {getattr(self, name).shape}")

  @property
  def num_pairs(self) -> int:
    return int(self.indptr[-1])

  @property
  def q_idx(self) -> np.ndarray:
    """(P,) int32 query index of each listed pair."""
    return np.repeat(np.arange(self.num_queries, dtype=np.int32), np.diff(self.indptr))

  def row(self, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(db_idx, psi, sim) of the listed pairs of query q."""
    s = slice(int(self.indptr[q]), int(self.indptr[q + 1]))
    return self.db_idx[s], self.psi[s], self.sim[s]

  def dense(self, key: str = "psi") -> np.ndarray:
    """Dense (num_queries, num_database) matrix of `psi` or `sim` (small cities only)."""
    out = np.zeros((self.num_queries, self.num_database), np.float32)
    out[self.q_idx, self.db_idx] = getattr(self, key)
    return out

"""Exact k-nearest-neighbour search over descriptors with FAISS (flat, brute-force indexes).

Upstream ranks with `faiss.IndexFlatL2` in float32; this module does the same and makes the order of
equal distances deterministic.
"""

from __future__ import annotations

import faiss
import numpy as np

_METRICS = ("l2", "ip")


def _as_descriptors(name: str, x: np.ndarray) -> np.ndarray:
  """Returns `x` as a C-contiguous float32 (N, D) array; raises naming `name` when invalid."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"`{name}` must be a 2-D (N, D) descriptor array, got shape {x.shape}")
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"`{name}` must hold real numbers, got dtype {x.dtype}")
  with np.errstate(over="ignore", invalid="ignore"):  # Reported below with the row and column.
    x32 = np.ascontiguousarray(x, dtype=np.float32)
  finite = np.isfinite(x32).all(axis=1)
  if not finite.all():
    row = int(np.flatnonzero(~finite)[0])
    col = int(np.flatnonzero(~np.isfinite(x32[row]))[0])
    value = float(x[row, col])
    what = "non-finite" if not np.isfinite(value) else "float32-overflowing"
    raise ValueError(f"`{name}` row {row} has a {what} value {value!r} at column {col} "
                     f"({int((~finite).sum())} bad row(s) in all)")
  return x32


def knn_search(db: np.ndarray, queries: np.ndarray, k: int,
               metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
  """Exact k-NN of each query among the database rows.

  Args:
    db: (N_db, D) database descriptors (cast to float32).
    queries: (N_q, D) query descriptors (cast to float32).
    k: number of neighbours wanted. Clipped to the database size: the result has
      min(k, N_db) columns, so every slot holds a real database index (never faiss's -1).
    metric: "l2" (IndexFlatL2: squared Euclidean distance, ascending) or "ip" (IndexFlatIP: inner
      product similarity, descending; equals cosine ranking for L2-normalised descriptors).

  Returns:
    (distances, indices): (N_q, min(k, N_db)) float32 scores and int64 database indices, best
    first. Equal scores are ordered by increasing database index (each returned row is re-sorted
    stably with numpy lexsort on (index, score)). Which of several tied candidates make it into the
    top-k at the cut-off is FAISS's choice.

  Raises:
    ValueError: unknown metric, k < 1, empty database, dimension mismatch, or a non-finite value
      (the message names the array and its first bad row).
  """
  if metric not in _METRICS:
    raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive integer, got {k!r}")
  db = _as_descriptors("db", db)
  queries = _as_descriptors("queries", queries)
  if db.shape[0] == 0:
    raise ValueError("`db` is empty (0 rows): nothing to search")
  if db.shape[1] != queries.shape[1]:
    raise ValueError(f"descriptor dimension mismatch: `db` has D={db.shape[1]}, `queries` has "
                     f"D={queries.shape[1]}")
  k = int(min(k, db.shape[0]))
  if queries.shape[0] == 0:
    return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
  index = faiss.IndexFlatL2(db.shape[1]) if metric == "l2" else faiss.IndexFlatIP(db.shape[1])
  index.add(db)
  distances, indices = index.search(queries, k)
  indices = indices.astype(np.int64)
  # Deterministic ties: primary key the score (ascending for l2, descending for ip), secondary the
  # database index. np.lexsort sorts by the last key first.
  primary = distances if metric == "l2" else -distances
  order = np.lexsort((indices, primary), axis=1)
  distances = np.take_along_axis(distances, order, axis=1)
  indices = np.take_along_axis(indices, order, axis=1)
  return distances, indices

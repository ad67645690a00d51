"""k-nearest-neighbour search over descriptors with FAISS.

Upstream ranks with `faiss.IndexFlatL2` in float32; `index="exact"` (the default) does the same and
makes the order of equal distances deterministic. `index="ivf"` (IndexIVFFlat: k-means coarse
quantiser, `nprobe` of `nlist` inverted lists searched) and `index="hnsw"` (IndexHNSWFlat graph,
`ef_search` candidates) are approximate: faster on large databases, but a true neighbour may be
missed; `check_recall=True` also runs the exact search and reports the fraction of the exact top-k
found (a property of the data, the index options and k: measure it before trusting the index).
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


_INDEXES = ("exact", "ivf", "hnsw")


def _approximate_index(kind: str, dim: int, metric: str, db: np.ndarray, options: dict):
  """Builds and fills an IVF-Flat or HNSW-Flat FAISS index over `db`."""
  faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
  options = dict(options)
  if kind == "ivf":
    nlist = int(options.pop("nlist", max(1, min(4096, round(4 * np.sqrt(len(db)))))))
    nprobe = int(options.pop("nprobe", max(1, nlist // 16)))
    seed = int(options.pop("seed", 0))
    if not 1 <= nlist <= len(db):
      raise ValueError(f"ivf: nlist must be in [1, {len(db)}] (database rows), got {nlist}")
    quantizer = faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # Small databases: no warning spam, still deterministic.
    index.train(db)
    index.nprobe = min(nprobe, nlist)
  else:
    m = int(options.pop("m", 32))
    index = faiss.IndexHNSWFlat(dim, m, faiss_metric)
    index.hnsw.efConstruction = int(options.pop("ef_construction", 80))
    index.hnsw.efSearch = int(options.pop("ef_search", 128))
  if options:
    raise ValueError(f"unknown {kind} index option(s) {sorted(options)}")
  index.add(db)
  return index


def knn_search(db: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2", *,
               index: str = "exact", index_options: dict | None = None,
               check_recall: bool = False):
  """k-NN of each query among the database rows (exact by default).

  Args:
    db: (N_db, D) database descriptors (cast to float32).
    queries: (N_q, D) query descriptors (cast to float32).
    k: number of neighbours wanted. Clipped to the database size: the result has
      min(k, N_db) columns, so every slot holds a real database index (never faiss's -1).
    metric: "l2" (IndexFlatL2: squared Euclidean distance, ascending) or "ip" (IndexFlatIP: inner
      product similarity, descending; equals cosine ranking for L2-normalized descriptors).
    index: "exact" (flat), "ivf" (IndexIVFFlat) or "hnsw" (IndexHNSWFlat).
    index_options: approximate indexes only. ivf: `nlist` (default round(4 sqrt(N_db)), at most
      4096), `nprobe` (default nlist // 16), `seed` (k-means, default 0); hnsw: `m` (32),
      `ef_construction` (80), `ef_search` (128).
    check_recall: also run the exact search and return the recall of the approximate one.

  Returns:
    (distances, indices), or (distances, indices, recall) when `check_recall`:
      distances, indices: (N_q, min(k, N_db)) float32 scores and int64 database indices, best
        first. Equal scores are ordered by increasing database index (each returned row is
        re-sorted stably with numpy lexsort on (index, score)). Which of several tied candidates
        make it into the top-k at the cut-off is FAISS's choice. An approximate index may return
        fewer than k hits for a query; the missing slots hold -1 (distance +FLT_MAX for "l2",
        -FLT_MAX for "ip").
      recall: mean over queries of |approximate top-k ∩ exact top-k| / k (1.0 for "exact").

  Raises:
    ValueError: unknown metric or index, k < 1, empty database, dimension mismatch, a non-finite
      value (the message names the array and its first bad row), or a bad index option.
  """
  if metric not in _METRICS:
    raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
  if index not in _INDEXES:
    raise ValueError(f"index must be one of {_INDEXES}, got {index!r}")
  if index_options and index == "exact":
    raise ValueError(f"index_options {sorted(index_options)} need index='ivf' or 'hnsw'")
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
    empty = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return (*empty, 1.0) if check_recall else empty
  if index == "exact":
    flat = faiss.IndexFlatL2(db.shape[1]) if metric == "l2" else faiss.IndexFlatIP(db.shape[1])
    flat.add(db)
    distances, indices = _sorted(flat.search(queries, k), metric)
    return (distances, indices, 1.0) if check_recall else (distances, indices)
  approx = _approximate_index(index, db.shape[1], metric, db, index_options or {})
  distances, indices = _sorted(approx.search(queries, k), metric)
  if not check_recall:
    return distances, indices
  _, exact = knn_search(db, queries, k, metric)
  found = [np.intersect1d(a[a >= 0], e).size for a, e in zip(indices, exact)]
  return distances, indices, float(np.mean(found) / k)


def _sorted(search_result: tuple[np.ndarray, np.ndarray],
            metric: str) -> tuple[np.ndarray, np.ndarray]:
  """Re-sorts each row of a FAISS search result by (score, database index)."""
  distances, indices = search_result
  indices = indices.astype(np.int64)
  # Deterministic ties: primary key the score (ascending for l2, descending for ip), secondary the
  # database index. np.lexsort sorts by the last key first.
  primary = distances if metric == "l2" else -distances
  order = np.lexsort((indices, primary), axis=1)
  distances = np.take_along_axis(distances, order, axis=1)
  indices = np.take_along_axis(indices, order, axis=1)
  return distances, indices

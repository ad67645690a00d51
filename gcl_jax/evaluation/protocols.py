"""Ground truth and scoring of place-recognition retrieval under named evaluation protocols.

Protocol "msls_per_city" (MSLS toolkit `datasets/msls.py` + GCL `src/validate.py`), per city:

* evaluated queries: in subtask `all`, not panoramic, and with at least one positive;
* positives of a query: NON-panoramic database images within `radius_m` metres (Euclidean UTM
  distance, boundary included);
* ranking: over the FULL city database, panoramas included; a panorama ranked in the top N takes a
  slot as a miss, exactly like the toolkit (which does not remove panorama predictions);
* all cities' evaluated queries are pooled into one recall@N / mAP@N (`metrics.recall_at_n`).

Two entry points share the ground truth and the scoring: `evaluate_retrieval` ranks with exact
k-NN over descriptors, `evaluate_rankings` scores rankings computed elsewhere (e.g. rows of an
upstream prediction file).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from gcl_jax.data.table import ImageTable
from gcl_jax.evaluation.knn import knn_search
from gcl_jax.evaluation.metrics import PAD, recall_at_n

PROTOCOLS = ("msls_per_city",)

# Added to the radius so that a database image at exactly `radius_m` counts despite rounding in the
# distance computation (1 micrometre: far below GPS precision, far above float64 rounding of UTM).
_RADIUS_EPS_M = 1e-6

_INFO_KEYS = ("num_queries_total", "num_queries_evaluated", "num_excluded_no_positive",
              "num_excluded_pano", "num_excluded_not_in_all", "num_database", "num_database_pano")


def msls_ground_truth(query: ImageTable, database: ImageTable,
                      radius_m: float = 25.0) -> tuple[np.ndarray, list[np.ndarray], dict[str, int]]:
  """MSLS ground truth of one city: evaluated queries and their positives.

  Args:
    query: the city's query table.
    database: the city's database table.
    radius_m: positive radius in metres; a database image at exactly `radius_m` is a positive.

  Returns:
    (eval_query_idx, positives, info):
      eval_query_idx: (E,) int64 row indices into `query` of the evaluated queries, ascending.
      positives: E int64 arrays of row indices into the FULL `database` table (ascending), never
        containing a panorama.
      info: counts. A query is counted under the first rule that excludes it, in the toolkit's
        order: num_excluded_not_in_all (not in subtask `all`), then num_excluded_pano (panoramic),
        then num_excluded_no_positive; plus num_queries_total, num_queries_evaluated,
        num_database (all rows, panoramas included) and num_database_pano.

  Raises:
    ValueError: a non-positive or non-finite radius, or non-finite coordinates in a kept row.
  """
  if not (isinstance(radius_m, (int, float, np.floating)) and math.isfinite(radius_m)
          and radius_m > 0):
    raise ValueError(f"radius_m must be a positive finite number of metres, got {radius_m!r}")
  in_all = np.asarray(query.in_all, bool)
  q_pano = np.asarray(query.pano, bool)
  candidates = np.flatnonzero(in_all & ~q_pano)
  db_rows = np.flatnonzero(~np.asarray(database.pano, bool))
  for table, rows in ((query, candidates), (database, db_rows)):
    bad = ~np.isfinite(table.utm[rows]).all(axis=1)
    if bad.any():
      i = int(rows[np.flatnonzero(bad)[0]])
      raise ValueError(f"{table.name}: row {i} (key {str(table.keys[i])!r}) has non-finite UTM "
                       f"coordinates {table.utm[i].tolist()}")
  positives_of_candidate: list[np.ndarray] = [np.zeros(0, np.int64)] * len(candidates)
  if len(candidates) and len(db_rows):
    tree = cKDTree(database.utm[db_rows])
    hits = tree.query_ball_point(query.utm[candidates], r=radius_m + _RADIUS_EPS_M,
                                 return_sorted=True)
    positives_of_candidate = [db_rows[np.asarray(h, np.int64)] for h in hits]
  has_pos = np.array([len(p) > 0 for p in positives_of_candidate], bool)
  eval_query_idx = candidates[has_pos].astype(np.int64)
  positives = [p for p, keep in zip(positives_of_candidate, has_pos) if keep]
  info = {
      "num_queries_total": len(query),
      "num_queries_evaluated": len(eval_query_idx),
      "num_excluded_no_positive": int((~has_pos).sum()),
      "num_excluded_pano": int((in_all & q_pano).sum()),
      "num_excluded_not_in_all": int((~in_all).sum()),
      "num_database": len(database),
      "num_database_pano": int(np.asarray(database.pano, bool).sum()),
  }
  return eval_query_idx, positives, info


@dataclasses.dataclass(frozen=True)
class CityEval:
  """One city's tables and descriptors for `evaluate_retrieval`.

  Attributes:
    query: query table.
    database: database table.
    q_desc: (len(query), D) descriptors, one row per query table row (all rows, evaluated or not).
    db_desc: (len(database), D) descriptors, one row per database table row (panoramas included).
    name: label used in details and errors; defaults to the query table's name.
  """

  query: ImageTable
  database: ImageTable
  q_desc: np.ndarray
  db_desc: np.ndarray
  name: str = ""


@dataclasses.dataclass(frozen=True)
class CityRanking:
  """One city's tables and precomputed rankings for `evaluate_rankings`.

  Attributes:
    query: query table.
    database: database table.
    ranked: (len(query), k) int database row indices in rank order for EVERY query row (rows of
      non-evaluated queries are ignored); -1 marks an empty slot.
    name: label used in details and errors; defaults to the query table's name.
  """

  query: ImageTable
  database: ImageTable
  ranked: np.ndarray
  name: str = ""


@dataclasses.dataclass(frozen=True)
class CityResult:
  """Per-city ground truth and rankings of the evaluated queries, for inspection and pictures.

  Attributes:
    name: city label.
    query: query table.
    database: database table.
    eval_query_idx: (E,) rows of `query` that were evaluated.
    ranked: (E, K) rows of `database` in rank order for each evaluated query; -1 = empty slot
      (database smaller than K). K is the same for every city of one evaluation.
    positives: E arrays of `database` rows that are correct for each evaluated query.
    distances: (E, K) float32 k-NN scores (NaN in empty slots), or None for `evaluate_rankings`.
    info: ground-truth counts from `msls_ground_truth`.
  """

  name: str
  query: ImageTable
  database: ImageTable
  eval_query_idx: np.ndarray
  ranked: np.ndarray
  positives: list[np.ndarray]
  distances: np.ndarray | None
  info: dict[str, int]

  def query_paths(self) -> list[str]:
    """Full paths of the evaluated queries, aligned with the rows of `ranked`."""
    paths = self.query.full_paths()
    return [paths[i] for i in self.eval_query_idx]

  def database_paths(self) -> list[str]:
    """Full paths of all database rows (index with `ranked`)."""
    return self.database.full_paths()


def _check_protocol(protocol: str, ns: Sequence[int]) -> tuple[int, ...]:
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown evaluation protocol {protocol!r}; supported: {PROTOCOLS}")
  ns = tuple(ns)
  if not ns or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                   for n in ns):
    raise ValueError(f"ns must be a non-empty sequence of positive integers, got {ns!r}")
  return ns


def _pad(a: np.ndarray, width: int, fill) -> np.ndarray:
  """Right-pads the columns of a 2-D array to `width` with `fill`."""
  if a.shape[1] >= width:
    return a
  out = np.full((a.shape[0], width), fill, a.dtype)
  out[:, :a.shape[1]] = a
  return out


def _score(results: list[CityResult], protocol: str, radius_m: float,
           ns: tuple[int, ...]) -> tuple[dict, list[CityResult]]:
  """Pads every city to one width, pools the evaluated queries and computes the metrics."""
  width = max([max(ns)] + [r.ranked.shape[1] for r in results])
  padded = []
  for r in results:
    distances = None if r.distances is None else _pad(r.distances, width, np.float32(np.nan))
    padded.append(dataclasses.replace(r, ranked=_pad(r.ranked, width, PAD), distances=distances))
  num_eval = sum(len(r.eval_query_idx) for r in padded)
  if num_eval == 0:
    counts = {r.name: r.info for r in padded}
    raise ValueError(f"no query has a positive within {radius_m} m in any city; nothing to "
                     f"evaluate (per-city counts: {counts})")
  ranked = np.concatenate([r.ranked for r in padded], axis=0)
  positives = [p for r in padded for p in r.positives]
  metrics = recall_at_n(ranked, positives, ns)
  totals = {key: sum(r.info[key] for r in padded) for key in _INFO_KEYS}
  result = dict(metrics)
  result.update({
      "protocol": protocol,
      "radius_m": float(radius_m),
      "num_queries": totals["num_queries_evaluated"],
      "num_database": totals["num_database"],
      "num_excluded": totals["num_queries_total"] - totals["num_queries_evaluated"],
      "num_queries_total": totals["num_queries_total"],
      "num_excluded_no_positive": totals["num_excluded_no_positive"],
      "num_excluded_pano": totals["num_excluded_pano"],
      "num_excluded_not_in_all": totals["num_excluded_not_in_all"],
      "num_database_pano": totals["num_database_pano"],
      "num_cities": len(padded),
  })
  return result, padded


def evaluate_retrieval(cities: Sequence[CityEval], *, protocol: str = "msls_per_city",
                       radius_m: float = 25.0, ns: Sequence[int] = (1, 5, 10, 20),
                       k: int | None = None, metric: str = "l2") -> tuple[dict, list[CityResult]]:
  """Ranks each city's full database by descriptor distance and scores all cities together.

  Args:
    cities: per-city tables and descriptors.
    protocol: evaluation protocol; only "msls_per_city" (see module docstring).
    radius_m: positive radius in metres.
    ns: recall/mAP cut-offs.
    k: database images retrieved per query (upstream used 30); defaults to max(ns) and must not be
      smaller. A city whose database has fewer than k images yields fewer retrievals; the missing
      slots are padded with -1 and count as misses (the upstream toolkit would crash instead).
    metric: "l2" (squared Euclidean, as upstream) or "ip" (inner product); see `knn_search`.

  Returns:
    (result, details):
      result: {"recall@N": percent, "map@N": fraction in [0, 1]} for each N, plus "protocol",
        "radius_m", "num_queries" (evaluated, all cities), "num_database" (all database rows,
        panoramas included), "num_excluded" (queries not evaluated), the per-rule exclusion
        counts of `msls_ground_truth`, "num_database_pano" and "num_cities".
      details: one CityResult per city, in input order.

  Raises:
    ValueError: unknown protocol, k < max(ns), descriptor rows not matching their tables, or no
      evaluated query at all.
  """
  ns = _check_protocol(protocol, ns)
  if k is None:
    k = max(ns)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < max(ns):
    raise ValueError(f"k (retrievals per query) must be an integer >= max(ns) = {max(ns)}, "
                     f"got {k!r}")
  if not cities:
    raise ValueError("cities is empty: nothing to evaluate")
  results = []
  for city in cities:
    name = city.name or city.query.name
    q_desc, db_desc = np.asarray(city.q_desc), np.asarray(city.db_desc)
    for label, desc, table in (("q_desc", q_desc, city.query), ("db_desc", db_desc, city.database)):
      if desc.ndim != 2 or desc.shape[0] != len(table):
        raise ValueError(f"city {name!r}: `{label}` must have shape ({len(table)}, D) to match "
                         f"table {table.name}, got {desc.shape}")
      finite = np.isfinite(desc).all(axis=1) if desc.size else np.ones(len(desc), bool)
      if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"city {name!r}: `{label}` row {row} (key {str(table.keys[row])!r}) has "
                         f"non-finite values ({int((~finite).sum())} bad row(s) in all)")
    eval_idx, positives, info = msls_ground_truth(city.query, city.database, radius_m)
    distances, ranked = knn_search(db_desc, q_desc[eval_idx], k, metric=metric)
    results.append(CityResult(name=name, query=city.query, database=city.database,
                              eval_query_idx=eval_idx, ranked=ranked, positives=positives,
                              distances=distances, info=info))
  return _score(results, protocol, radius_m, ns)


def evaluate_rankings(cities: Sequence[CityRanking], *, protocol: str = "msls_per_city",
                      radius_m: float = 25.0,
                      ns: Sequence[int] = (1, 5, 10, 20)) -> tuple[dict, list[CityResult]]:
  """Scores precomputed per-city rankings under `protocol` (same output as `evaluate_retrieval`).

  Rows shorter than max(ns) are padded with -1: as in the toolkit, which slices each prediction
  row to its first N keys, missing predictions count as misses.

  Raises:
    ValueError: unknown protocol, `ranked` not matching its tables, or no evaluated query.
  """
  ns = _check_protocol(protocol, ns)
  if not cities:
    raise ValueError("cities is empty: nothing to evaluate")
  results = []
  for city in cities:
    name = city.name or city.query.name
    ranked = np.asarray(city.ranked)
    if ranked.ndim != 2 or ranked.shape[0] != len(city.query):
      raise ValueError(f"city {name!r}: `ranked` must have shape ({len(city.query)}, k), one row "
                       f"per query table row, got {ranked.shape}")
    if not np.issubdtype(ranked.dtype, np.integer):
      raise ValueError(f"city {name!r}: `ranked` must hold integers, got dtype {ranked.dtype}")
    if ranked.size and (ranked.max() >= len(city.database) or ranked.min() < PAD):
      bad = np.argwhere((ranked >= len(city.database)) | (ranked < PAD))[0]
      raise ValueError(f"city {name!r}: ranked[{bad[0]}, {bad[1]}] = {int(ranked[tuple(bad)])} "
                       f"is not a row of database {city.database.name} "
                       f"({len(city.database)} rows) nor -1")
    eval_idx, positives, info = msls_ground_truth(city.query, city.database, radius_m)
    results.append(CityResult(name=name, query=city.query, database=city.database,
                              eval_query_idx=eval_idx, ranked=ranked[eval_idx].astype(np.int64),
                              positives=positives, distances=None, info=info))
  return _score(results, protocol, radius_m, ns)

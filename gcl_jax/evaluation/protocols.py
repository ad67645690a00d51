"""Ground truth and scoring of place-recognition retrieval under named evaluation protocols.

Protocol "msls_per_city" (MSLS toolkit `datasets/msls.py` + GCL `src/validate.py` +
`extract_predictions.py`), per city:

* evaluated queries: in subtask `all`, not panoramic, and with at least one positive;
* positives of a query: NON-panoramic database images within `radius_m` metres (Euclidean UTM
  distance, boundary included);
* ranking: over the FULL city database, panoramas included; a panorama ranked in the top N takes a
  slot as a miss, exactly like the toolkit (which does not remove panorama predictions);
* all cities' evaluated queries are pooled into one recall@N / mAP@N (`metrics.recall_at_n`).

Protocol "msls_official": the same ground truth and scoring rules (MSLS val toolkit: 25 m boundary
included, per-city ground truth, subtask `all`, panoramas dropped from queries and positives but
kept in the ranking as misses, queries without a positive excluded). Read against the reference
(GCL_REFERENCE 6.1-6.2), the authors' search IS per city (`extract_msls_top_k`: each city's queries
vs that city's database.json), i.e. exactly "msls_per_city". So "msls_official" differs in ONE
point only: every query is ranked against the UNION of all cities' databases (panoramas
included), as the peers' MSLS-val loaders do (deep-visual-geo-localization-benchmark /
VPR-methods-evaluation build one merged database). A database image of another city is never a
positive (ground truth stays per city), so retrieving it is a miss; the recall can therefore only
be lower than or equal to "msls_per_city" for the same descriptors.

Protocol "msls_test": the rules of "msls_official" on the six MSLS test cities (`TEST_CITIES`),
whose coordinates are not public: the caller supplies the ground truth as query/database tables
with UTM coordinates. Every city must be named after a test city.

Protocol "at_format" (deep-visual-geo-localization-benchmark / VPR-methods-evaluation rule for
@-format datasets: Pitts30k, Tokyo 24/7, SF-XL, ...): positives are database images within 25 m
(boundary included, as sklearn `radius_neighbors`); ALL queries count in the denominator (a query
without positive is always a miss; its AP is 0); one merged database (all `cities` are
concatenated into one database and one query set). Panorama and subtask flags are ignored.

Protocol "gt_h5" (GCL `extract_predictions.eval_pitts`, NetVLAD-style ground truth): positives come
from a binary `sim` [N_q, N_db] matrix (h5 dataset `sim`, e.g. `pitts30k_test_gt.h5`, `val_gt.h5`,
`gt.h5`) instead of coordinates; queries without a positive are excluded; one database. With
per-image month stamps (`query_months`/`db_months`, see `tokyotm_month`), the TokyoTM rule of
`extract_top_k_tokyotm` applies: database images taken in the same month as the query (|delta| < 1)
are skipped while walking the ranked list, and k results are kept after skipping.

Two entry points share the ground truth and the scoring: `evaluate_retrieval` ranks with exact
k-NN over descriptors, `evaluate_rankings` scores rankings computed elsewhere (e.g. rows of an
upstream prediction file; MSLS protocols only). Every result dict carries "protocol",
"num_queries" (evaluated), "num_database" and "num_excluded".
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from gcl_jax.types import ImageTable
from gcl_jax.evaluation.knn import knn_search
from gcl_jax.evaluation.metrics import PAD, recall_at_n

PROTOCOLS = ("msls_per_city", "msls_official", "msls_test", "at_format", "gt_h5")
# Protocols whose ground truth is `msls_ground_truth` per city.
MSLS_PROTOCOLS = ("msls_per_city", "msls_official", "msls_test")
# The six MSLS test cities (a copy: evaluation does not import the TensorFlow-based reader).
MSLS_TEST_CITIES = ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala")

# Added to the radius so that a database image at exactly `radius_m` counts despite rounding in the
# distance computation (1 micrometre: far below GPS precision, far above float64 rounding of UTM).
_RADIUS_EPS_M = 1e-6

_INFO_KEYS = ("num_queries_total", "num_queries_evaluated", "num_excluded_no_positive",
              "num_excluded_pano", "num_excluded_not_in_all", "num_database", "num_database_pano")


def _check_radius(radius_m) -> None:
  if not (isinstance(radius_m, (int, float, np.floating)) and not isinstance(radius_m, bool)
          and math.isfinite(radius_m) and radius_m > 0):
    raise ValueError(f"radius_m must be a positive finite number of metres, got {radius_m!r}")


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
  _check_radius(radius_m)
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


def concat_tables(tables: Sequence[ImageTable], name: str) -> ImageTable:
  """One ImageTable holding the rows of `tables` in order (for merged databases / query sets).

  Raises:
    ValueError: no tables, or tables with different roots (paths are relative to one root).
  """
  if not tables:
    raise ValueError(f"concat_tables({name!r}): no tables to concatenate")
  roots = sorted({t.root for t in tables})
  if len(roots) != 1:
    raise ValueError(f"concat_tables({name!r}): tables have different roots {roots}; a merged "
                     f"table needs one root")
  if len(tables) == 1:
    return dataclasses.replace(tables[0], name=name)
  cat = lambda field: np.concatenate([np.asarray(getattr(t, field)) for t in tables])
  return ImageTable(root=roots[0], name=name, paths=cat("paths"), keys=cat("keys"),
                    utm=np.concatenate([np.asarray(t.utm, np.float64).reshape(-1, 2)
                                        for t in tables]),
                    heading=cat("heading"), pano=cat("pano"), night=cat("night"),
                    in_all=cat("in_all"))


def load_sim_h5(path: str | os.PathLike, dataset: str = "sim") -> np.ndarray:
  """Reads the binary ground-truth matrix [N_q, N_db] of an authors' `*_gt.h5` file as bool.

  Raises:
    ValueError: missing dataset, or a matrix that is not 2-D.
  """
  import h5py  # Only the gt_h5 protocol needs it.
  with h5py.File(path, "r") as f:
    if dataset not in f:
      raise ValueError(f"{os.fspath(path)}: no dataset {dataset!r} (datasets: {sorted(f.keys())})")
    sim = np.asarray(f[dataset][()])
  if sim.ndim != 2:
    raise ValueError(f"{os.fspath(path)}: dataset {dataset!r} must be 2-D [N_q, N_db], got shape "
                     f"{sim.shape}")
  return sim > 0


def tokyotm_month(path: str, component: int = 3) -> int:
  """TokyoTM time stamp of an image path, the authors' rule: `int(path.split('/')[3][1:])`.

  (`extract_predictions.extract_top_k_tokyotm`: path component 3 without its first character.)

  Raises:
    ValueError: the path has too few components or the component is not `<char><integer>`.
  """
  parts = str(path).split("/")
  try:
    return int(parts[component][1:])
  except (IndexError, ValueError):
    raise ValueError(f"cannot read a TokyoTM time stamp from path {path!r}: component "
                     f"{component} must be one character followed by an integer") from None


def _check_k(k, ns: tuple[int, ...]) -> int:
  if k is None:
    k = max(ns)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < max(ns):
    raise ValueError(f"k (retrievals per query) must be an integer >= max(ns) = {max(ns)}, "
                     f"got {k!r}")
  return int(k)


def _city_descriptors(city: CityEval) -> tuple[str, np.ndarray, np.ndarray]:
  """Validated (name, q_desc, db_desc) of one city."""
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
  return name, q_desc, db_desc


def _score_all_queries(result_: CityResult, protocol: str, ns: tuple[int, ...], extra: dict,
                       keep_no_positive: bool) -> tuple[dict, list[CityResult]]:
  """Scores one merged CityResult; queries without positives are misses (AP 0) when kept."""
  width = max(max(ns), result_.ranked.shape[1])
  distances = (None if result_.distances is None
               else _pad(result_.distances, width, np.float32(np.nan)))
  r = dataclasses.replace(result_, ranked=_pad(result_.ranked, width, PAD), distances=distances)
  has_pos = np.array([len(p) > 0 for p in r.positives], bool)
  num_with, num_total = int(has_pos.sum()), len(r.positives)
  if num_with == 0:
    raise ValueError(f"protocol {protocol!r}: no query has a positive ({num_total} queries); "
                     f"nothing to evaluate")
  metrics = recall_at_n(r.ranked[has_pos], [p for p, h in zip(r.positives, has_pos) if h], ns)
  if keep_no_positive:  # A query without positive contributes 0 to both sums.
    metrics = {key: value * num_with / num_total for key, value in metrics.items()}
  result = dict(metrics)
  num_queries = num_total if keep_no_positive else num_with
  result.update({"protocol": protocol, "num_queries": num_queries,
                 "num_database": len(r.database), "num_excluded": r.info["num_queries_total"] -
                 num_queries, "num_queries_total": r.info["num_queries_total"],
                 "num_queries_without_positive": num_total - num_with, "num_cities": 1})
  result.update(extra)
  return result, [r]


def _evaluate_msls_union(cities: Sequence[CityEval], protocol: str, radius_m: float,
                         ns: tuple[int, ...], k: int, metric: str) -> tuple[dict, list[CityResult]]:
  """msls_official / msls_test: per-city ground truth, search over the union of all databases."""
  checked = [_city_descriptors(c) for c in cities]
  if protocol == "msls_test":
    bad = [name for name, _, _ in checked if name not in MSLS_TEST_CITIES]
    if bad:
      raise ValueError(f"protocol 'msls_test': cities {bad} are not MSLS test cities "
                       f"{MSLS_TEST_CITIES} (name each CityEval after its city)")
  merged_db = concat_tables([c.database for c in cities], name="+".join(n for n, _, _ in checked))
  db_all = np.concatenate([db for _, _, db in checked], axis=0)
  offsets = np.cumsum([0] + [len(c.database) for c in cities])
  truths = []
  for city, (name, _, _) in zip(cities, checked):
    try:
      truths.append(msls_ground_truth(city.query, city.database, radius_m))
    except ValueError as e:
      if protocol == "msls_test":
        raise ValueError(f"protocol 'msls_test', city {name!r}: the test ground truth must be "
                         f"supplied as tables with finite UTM coordinates ({e})") from None
      raise
  # One search of every city's evaluated queries against the union database.
  q_all = np.concatenate([q[idx] for (_, q, _), (idx, _, _) in zip(checked, truths)], axis=0)
  distances_all, ranked_all = knn_search(db_all, q_all, k, metric=metric)
  splits = np.cumsum([len(idx) for idx, _, _ in truths])[:-1]
  results = []
  for city, (name, _, _), (eval_idx, positives, info), offset, distances, ranked in zip(
      cities, checked, truths, offsets, np.split(distances_all, splits),
      np.split(ranked_all, splits)):
    # The union is counted once (on the first city) so that the pooled totals are right.
    info = dict(info, num_database=len(merged_db) if not results else 0,
                num_database_pano=int(np.asarray(merged_db.pano).sum()) if not results else 0)
    results.append(CityResult(name=name, query=city.query, database=merged_db,
                              eval_query_idx=eval_idx, ranked=ranked,
                              positives=[p + offset for p in positives], distances=distances,
                              info=info))
  result, details = _score(results, protocol, radius_m, ns)
  # The info counted the union once (on the first city); give every city the union's counts back.
  details = [dataclasses.replace(d, info=dict(d.info, num_database=len(merged_db),
                                              num_database_pano=result["num_database_pano"]))
             for d in details]
  result["database_scope"] = "union of all cities"
  return result, details


def _evaluate_at_format(cities: Sequence[CityEval], radius_m: float, ns: tuple[int, ...], k: int,
                        metric: str) -> tuple[dict, list[CityResult]]:
  """at_format: one merged database, positives within radius_m, all queries counted."""
  checked = [_city_descriptors(c) for c in cities]
  query = concat_tables([c.query for c in cities], name="+".join(c.query.name for c in cities))
  database = concat_tables([c.database for c in cities],
                           name="+".join(c.database.name for c in cities))
  q_desc = np.concatenate([q for _, q, _ in checked], axis=0)
  db_desc = np.concatenate([db for _, _, db in checked], axis=0)
  for table in (query, database):
    bad = ~np.isfinite(table.utm).all(axis=1)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      raise ValueError(f"{table.name}: row {i} (key {str(table.keys[i])!r}) has non-finite UTM "
                       f"coordinates {table.utm[i].tolist()}")
  hits = cKDTree(database.utm).query_ball_point(query.utm, r=radius_m + _RADIUS_EPS_M,
                                                return_sorted=True)
  positives = [np.asarray(h, np.int64) for h in hits]
  distances, ranked = knn_search(db_desc, q_desc, k, metric=metric)
  info = {"num_queries_total": len(query)}
  r = CityResult(name="+".join(n for n, _, _ in checked), query=query, database=database,
                 eval_query_idx=np.arange(len(query), dtype=np.int64), ranked=ranked,
                 positives=positives, distances=distances, info=info)
  return _score_all_queries(r, "at_format", ns, {"radius_m": float(radius_m)},
                            keep_no_positive=True)


def _evaluate_gt_h5(cities: Sequence[CityEval], sim, ns: tuple[int, ...], k: int, metric: str,
                    query_months, db_months) -> tuple[dict, list[CityResult]]:
  """gt_h5: positives from a binary sim matrix, optional TokyoTM same-month skipping."""
  if len(cities) != 1:
    raise ValueError(f"protocol 'gt_h5' evaluates one query set against one database (one "
                     f"CityEval), got {len(cities)}")
  if sim is None:
    raise ValueError("protocol 'gt_h5' needs `sim`: a path to a *_gt.h5 file or a [N_q, N_db] "
                     "array")
  city = cities[0]
  name, q_desc, db_desc = _city_descriptors(city)
  source = None
  if isinstance(sim, (str, os.PathLike)):
    source = os.fspath(sim)
    sim = load_sim_h5(sim)
  sim = np.asarray(sim)
  if sim.shape != (len(city.query), len(city.database)):
    raise ValueError(f"`sim` must have shape ({len(city.query)}, {len(city.database)}) (queries x "
                     f"database of city {name!r}), got {sim.shape}")
  sim = sim > 0
  has_pos = sim.any(axis=1)
  eval_idx = np.flatnonzero(has_pos).astype(np.int64)
  positives = [np.flatnonzero(sim[q]).astype(np.int64) for q in eval_idx]
  extra = {"tokyotm_month_rule": False}
  if (query_months is None) != (db_months is None):
    raise ValueError("give both `query_months` and `db_months` (TokyoTM rule) or neither")
  if query_months is None:
    distances, ranked = knn_search(db_desc, q_desc[eval_idx], k, metric=metric)
  else:
    qm = np.asarray(query_months, np.int64)
    dm = np.asarray(db_months, np.int64)
    if qm.shape != (len(city.query),) or dm.shape != (len(city.database),):
      raise ValueError(f"`query_months` / `db_months` must have shapes ({len(city.query)},) / "
                       f"({len(city.database)},), got {qm.shape} / {dm.shape}")
    qm = qm[eval_idx]
    months, counts = np.unique(dm, return_counts=True)
    same = dict(zip(months.tolist(), counts.tolist()))
    most_same = max([same.get(m, 0) for m in qm.tolist()], default=0)
    k_search = min(len(dm), k + most_same)
    distances, ranked = knn_search(db_desc, q_desc[eval_idx], k_search, metric=metric)
    keep = np.abs(dm[ranked] - qm[:, None]) >= 1  # Same month (|delta| < 1) is skipped.
    # Stable move of the kept slots to the front, then cut at k; skipped slots become -1 / NaN.
    order = np.argsort(~keep, axis=1, kind="stable")
    ranked = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ranked, order, 1),
                      PAD)[:, :k]
    distances = np.where(ranked >= 0, np.take_along_axis(distances, order, 1)[:, :k],
                         np.float32(np.nan)).astype(np.float32)
    extra["tokyotm_month_rule"] = True
  if source is not None:
    extra["gt_file"] = source
  info = {"num_queries_total": len(city.query)}
  r = CityResult(name=name, query=city.query, database=city.database, eval_query_idx=eval_idx,
                 ranked=ranked, positives=positives, distances=distances, info=info)
  return _score_all_queries(r, "gt_h5", ns, extra, keep_no_positive=False)


def evaluate_retrieval(cities: Sequence[CityEval], *, protocol: str = "msls_per_city",
                       radius_m: float = 25.0, ns: Sequence[int] = (1, 5, 10, 20),
                       k: int | None = None, metric: str = "l2", sim=None, query_months=None,
                       db_months=None) -> tuple[dict, list[CityResult]]:
  """Ranks the database(s) by descriptor distance and scores all queries under `protocol`.

  Args:
    cities: per-city tables and descriptors. "at_format" merges them into one query set and one
      database; "gt_h5" takes exactly one.
    protocol: one of `PROTOCOLS` (see module docstring).
    radius_m: positive radius in metres (coordinate protocols; ignored by "gt_h5").
    ns: recall/mAP cut-offs.
    k: database images retrieved per query (upstream used 30); defaults to max(ns) and must not be
      smaller. A database with fewer than k images yields fewer retrievals; the missing slots are
      padded with -1 and count as misses (the upstream toolkit would crash instead).
    metric: "l2" (squared Euclidean, as upstream) or "ip" (inner product); see `knn_search`.
    sim: "gt_h5" only: path of an h5 file with dataset `sim`, or a [N_q, N_db] array; nonzero =
      positive.
    query_months: "gt_h5" only, optional: (N_q,) integer month stamps of the queries (e.g.
      `tokyotm_month` of each path); with `db_months`, enables the TokyoTM same-month skipping.
    db_months: "gt_h5" only, optional: (N_db,) month stamps of the database images.

  Returns:
    (result, details):
      result: {"recall@N": percent, "map@N": fraction in [0, 1]} for each N, plus "protocol",
        "num_queries" (queries in the denominator), "num_database" (database rows searched,
        panoramas included), "num_excluded" (queries not in the denominator) and per-protocol
        counts (MSLS: the per-rule exclusion counts of `msls_ground_truth`, "num_database_pano",
        "num_cities", "radius_m").
      details: MSLS protocols: one CityResult per city, in input order ("msls_official" /
        "msls_test": `database` is the union table and `ranked`/`positives` index it);
        "at_format"/"gt_h5": one CityResult.

  Raises:
    ValueError: unknown protocol, k < max(ns), descriptor rows not matching their tables, missing
      protocol inputs, or no evaluated query at all.
  """
  ns = _check_protocol(protocol, ns)
  k = _check_k(k, ns)
  if not cities:
    raise ValueError("cities is empty: nothing to evaluate")
  if protocol != "gt_h5" and (sim is not None or query_months is not None
                              or db_months is not None):
    raise ValueError(f"`sim`, `query_months` and `db_months` belong to protocol 'gt_h5', not "
                     f"{protocol!r}")
  if protocol in ("msls_official", "msls_test"):
    return _evaluate_msls_union(cities, protocol, radius_m, ns, k, metric)
  if protocol == "at_format":
    _check_radius(radius_m)
    return _evaluate_at_format(cities, radius_m, ns, k, metric)
  if protocol == "gt_h5":
    return _evaluate_gt_h5(cities, sim, ns, k, metric, query_months, db_months)
  results = []
  for city in cities:
    name, q_desc, db_desc = _city_descriptors(city)
    eval_idx, positives, info = msls_ground_truth(city.query, city.database, radius_m)
    distances, ranked = knn_search(db_desc, q_desc[eval_idx], k, metric=metric)
    results.append(CityResult(name=name, query=city.query, database=city.database,
                              eval_query_idx=eval_idx, ranked=ranked, positives=positives,
                              distances=distances, info=info))
  return _score(results, protocol, radius_m, ns)


def evaluate_rankings(cities: Sequence[CityRanking], *, protocol: str = "msls_per_city",
                      radius_m: float = 25.0,
                      ns: Sequence[int] = (1, 5, 10, 20)) -> tuple[dict, list[CityResult]]:
  """Scores precomputed per-city rankings under an MSLS protocol (output as `evaluate_retrieval`).

  The rankings index each city's own database, so the search scope is whatever produced them;
  "msls_official" / "msls_test" score them with the same rules as "msls_per_city" (only the
  result's "protocol" differs; "msls_test" also checks the city names).

  Rows shorter than max(ns) are padded with -1: as in the toolkit, which slices each prediction
  row to its first N keys, missing predictions count as misses.

  Raises:
    ValueError: unknown or non-MSLS protocol, `ranked` not matching its tables, or no evaluated
      query.
  """
  ns = _check_protocol(protocol, ns)
  if protocol not in MSLS_PROTOCOLS:
    raise ValueError(f"evaluate_rankings scores MSLS protocols {MSLS_PROTOCOLS}, got "
                     f"{protocol!r}; use evaluate_retrieval")
  if protocol == "msls_test":
    bad = [c.name or c.query.name for c in cities
           if (c.name or c.query.name) not in MSLS_TEST_CITIES]
    if bad:
      raise ValueError(f"protocol 'msls_test': cities {bad} are not MSLS test cities "
                       f"{MSLS_TEST_CITIES} (name each CityRanking after its city)")
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

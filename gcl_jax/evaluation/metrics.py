"""Retrieval metrics with the definitions of the MSLS toolkit (mapillary_sls `utils/eval.py`).

* recall@N: percentage of queries with at least one positive among their first N retrievals.
* map@N: mean over queries of AP@N, where AP@N = (sum over the ranks r <= N that hold a positive
  seen for the first time in the row of: hits so far / r) / min(|positives|, N).

Recall is returned in percent (the toolkit returns a fraction); mAP stays a fraction in [0, 1], as in
the toolkit. Ranked rows may be padded with -1 ("no retrieval"), which is never a positive: a
database smaller than N therefore scores its missing slots as misses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = -1  # Marks an empty slot in a ranked row (no database image retrieved there).


def _check_ns(ns: Sequence[int], k: int) -> tuple[int, ...]:
  """Validates the cut-offs against the ranked width `k`."""
  ns = tuple(ns)
  if not ns:
    raise ValueError("ns must name at least one cut-off N, got an empty sequence")
  for n in ns:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ValueError(f"every N in ns must be a positive integer, got {n!r} in ns={ns}")
    if n > k:
      raise ValueError(f"N={n} is larger than the number of ranked columns k={k}: recall@{n} "
                       f"needs at least {n} retrievals per query (pad rows with -1 to score "
                       f"missing retrievals as misses)")
  if len(set(ns)) != len(ns):
    raise ValueError(f"ns has repeated values: {ns}")
  return tuple(int(n) for n in ns)


def _check_positives(positives: Sequence[np.ndarray], num_queries: int) -> list[np.ndarray]:
  """Validates the per-query positive sets; returns them as int64 arrays."""
  if len(positives) != num_queries:
    raise ValueError(f"positives has {len(positives)} entries but ranked has {num_queries} rows")
  out = []
  for q, pos in enumerate(positives):
    pos = np.asarray(pos)
    if pos.ndim != 1:
      raise ValueError(f"positives[{q}] must be 1-D, got shape {pos.shape}")
    if pos.size == 0:
      raise ValueError(f"query {q} has no positives; exclude such queries before scoring "
                       f"(the evaluation protocol decides which queries count)")
    if not np.issubdtype(pos.dtype, np.integer):
      raise ValueError(f"positives[{q}] must hold integer database indices, got dtype {pos.dtype}")
    if pos.min() < 0:
      raise ValueError(f"positives[{q}] holds a negative database index {int(pos.min())}")
    if np.unique(pos).size != pos.size:
      raise ValueError(f"positives[{q}] holds repeated database indices: {pos.tolist()}")
    out.append(pos.astype(np.int64))
  return out


def hit_matrix(ranked: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
  """Boolean (Q, k) matrix: True where a ranked slot holds a positive not seen earlier in its row.

  A database index repeated within a row counts only at its first occurrence (as the toolkit's
  `apk`); -1 padding is never a hit. Inputs are assumed validated.
  """
  num_q, k = ranked.shape
  counts = np.array([len(p) for p in positives], np.int64)
  stride = int(max(ranked.max(initial=0), max(int(p.max()) for p in positives))) + 2
  # Encode (query, database index) pairs as one int64 so membership is a single sorted search.
  pos_codes = np.repeat(np.arange(num_q, dtype=np.int64), counts) * stride + np.concatenate(positives)
  pos_codes.sort()
  codes = np.arange(num_q, dtype=np.int64)[:, None] * stride + ranked
  where = np.searchsorted(pos_codes, codes).clip(max=len(pos_codes) - 1)
  hits = (pos_codes[where] == codes) & (ranked >= 0)
  # First occurrence within each row: stable sort of the row, mark equal successors.
  order = np.argsort(ranked, axis=1, kind="stable")
  sorted_rows = np.take_along_axis(ranked, order, axis=1)
  repeated_sorted = np.zeros_like(sorted_rows, dtype=bool)
  repeated_sorted[:, 1:] = sorted_rows[:, 1:] == sorted_rows[:, :-1]
  repeated = np.zeros_like(repeated_sorted)
  np.put_along_axis(repeated, order, repeated_sorted, axis=1)
  return hits & ~repeated


def recall_at_n(ranked: np.ndarray, positives: Sequence[np.ndarray],
                ns: Sequence[int] = (1, 5, 10, 20)) -> dict[str, float]:
  """Recall@N (percent) and mAP@N (fraction) over a set of queries, MSLS toolkit definitions.

  Args:
    ranked: (Q, k) int array of database indices in rank order, best first. -1 marks an empty slot
      (fewer than k retrievals), which counts as a miss.
    positives: Q int arrays, the database indices that are correct for each query. Every query must
      have at least one positive: queries without positives are excluded by the protocol before
      calling (as the MSLS toolkit does).
    ns: cut-offs N; each must be between 1 and k.

  Returns:
    {"recall@N": percent of queries with >= 1 positive in the first N slots,
     "map@N": mean AP@N as a fraction in [0, 1], with AP@N denominator min(|positives|, N)}
    for each N in `ns`, in the order recall@N1, map@N1, recall@N2, ...

  Raises:
    ValueError: malformed `ranked`, a query without positives, or an N larger than k.
  """
  ranked = np.asarray(ranked)
  if ranked.ndim != 2:
    raise ValueError(f"ranked must be a 2-D (queries x k) array, got shape {ranked.shape}")
  if ranked.shape[0] == 0:
    raise ValueError("ranked has no queries: nothing to evaluate")
  if not np.issubdtype(ranked.dtype, np.integer):
    raise ValueError(f"ranked must hold integer database indices, got dtype {ranked.dtype}")
  if ranked.size and ranked.min() < PAD:
    bad = np.argwhere(ranked < PAD)[0]
    raise ValueError(f"ranked[{bad[0]}, {bad[1]}] = {int(ranked[tuple(bad)])}: database indices "
                     f"must be >= 0 (or -1 for an empty slot)")
  ranked = ranked.astype(np.int64)
  ns = _check_ns(ns, ranked.shape[1])
  positives = _check_positives(positives, ranked.shape[0])
  hits = hit_matrix(ranked, positives)
  num_pos = np.array([len(p) for p in positives], np.float64)
  ranks = np.arange(1, ranked.shape[1] + 1, dtype=np.float64)
  precision = np.cumsum(hits, axis=1) / ranks  # hits so far / rank, at every rank
  ap_terms = np.where(hits, precision, 0.0)
  cum_ap = np.cumsum(ap_terms, axis=1)
  first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.iinfo(np.int64).max)
  metrics: dict[str, float] = {}
  for n in ns:
    metrics[f"recall@{n}"] = float(100.0 * np.mean(first_hit <= n))
    metrics[f"map@{n}"] = float(np.mean(cum_ap[:, n - 1] / np.minimum(num_pos, n)))
  return metrics

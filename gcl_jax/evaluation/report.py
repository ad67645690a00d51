"""Evaluation outputs: per-query CSV, MSLS prediction file, results.json + markdown table.

The markdown table is `visualize.results_markdown` (not duplicated here); `write_results` only puts
it beside the JSON.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.evaluation.knn import knn_search
from gcl_jax.evaluation.protocols import CityEval, CityResult
from gcl_jax.evaluation.visualize import results_markdown

PER_QUERY_COLUMNS = ("city", "query_key", "first_positive_rank", "top1_distance",
                     "num_positives")


def _write_text(path: str | os.PathLike, text: str) -> None:
  gcl_io.atomic_write(path, text)


def first_positive_ranks(detail: CityResult) -> np.ndarray:
  """(E,) 1-based rank of the first positive in each evaluated query's ranking, -1 if none."""
  ranks = np.full(len(detail.eval_query_idx), -1, np.int64)
  for row, (ranked, pos) in enumerate(zip(detail.ranked, detail.positives)):
    hit = np.flatnonzero(np.isin(ranked, pos) & (ranked >= 0))
    if hit.size:
      ranks[row] = int(hit[0]) + 1
  return ranks


def per_query_csv(details: Sequence[CityResult]) -> str:
  """CSV text, one row per evaluated query of every city (in order), columns `PER_QUERY_COLUMNS`.

  first_positive_rank: 1-based rank of the first positive among the retrieved images, -1 when none
  was retrieved; top1_distance: the k-NN score of the first retrieval (squared L2 or inner product
  as searched), empty when unknown (rankings scored with `evaluate_rankings`) or no retrieval;
  num_positives: size of the query's positive set.
  """
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(PER_QUERY_COLUMNS)
  for detail in details:
    ranks = first_positive_ranks(detail)
    for row, q in enumerate(detail.eval_query_idx):
      top1 = ""
      if detail.distances is not None and detail.ranked.shape[1] and detail.ranked[row, 0] >= 0:
        top1 = repr(float(detail.distances[row, 0]))
      writer.writerow([detail.name, str(detail.query.keys[q]), int(ranks[row]), top1,
                       len(detail.positives[row])])
  return out.getvalue()


def write_per_query_csv(path: str | os.PathLike, details: Sequence[CityResult]) -> None:
  """Writes `per_query_csv(details)` to `path` (atomically)."""
  _write_text(path, per_query_csv(details))


def predictions_text(details: Sequence[CityResult], k: int | None = None) -> str:
  """MSLS-style prediction lines `<query key> <db key 1> ... <db key k>`, one per evaluated query.

  This is the format of GCL `extract_msls_top_k` / the MSLS toolkit's `evaluate.py --prediction`
  (keys are file stems, separated by single spaces). Empty slots (-1) are left out, so a row of a
  database smaller than k is shorter; the toolkit reads such a file only when all rows have the
  same length. Only evaluated queries are written (the toolkit drops the others anyway).

  Raises:
    ValueError: k < 1.
  """
  if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
    raise ValueError(f"k must be a positive integer or None, got {k!r}")
  lines = []
  for detail in details:
    db_keys = np.asarray(detail.database.keys)
    for row, q in enumerate(detail.eval_query_idx):
      ranked = detail.ranked[row] if k is None else detail.ranked[row, :k]
      keys = [str(detail.query.keys[q])] + [str(db_keys[i]) for i in ranked if i >= 0]
      lines.append(" ".join(keys))
  return "\n".join(lines) + ("\n" if lines else "")


def write_predictions(path: str | os.PathLike, details: Sequence[CityResult],
                      k: int | None = None) -> None:
  """Writes `predictions_text(details, k)` to `path` (atomically)."""
  _write_text(path, predictions_text(details, k))


def submission_text(cities: Sequence[CityEval], k: int = 30, metric: str = "l2") -> str:
  """Prediction lines for EVERY query row, no ground truth needed (e.g. MSLS test cities).

  As GCL `extract_msls_top_k`: each city's queries are ranked against that city's full database
  (panoramas included) and written as `<query key> <db key 1> ... <db key k>`, cities in order;
  k = 30 upstream (clipped to the database size).
  """
  lines = []
  for city in cities:
    _, ranked = knn_search(city.db_desc, city.q_desc, k, metric=metric)
    db_keys = np.asarray(city.database.keys)
    for key, row in zip(city.query.keys, ranked):
      lines.append(" ".join([str(key)] + [str(db_keys[i]) for i in row]))
  return "\n".join(lines) + ("\n" if lines else "")


def read_predictions(path: str | os.PathLike) -> dict[str, list[str]]:
  """Reads a prediction file into {query key: [db keys in rank order]}.

  Raises:
    ValueError: an empty line or a query key given twice (the line number is named).
  """
  out: dict[str, list[str]] = {}
  with gcl_io.open(path, "r") as f:
    for line_no, line in enumerate(f, start=1):
      parts = line.split()
      if not parts:
        raise ValueError(f"{os.fspath(path)}:{line_no}: empty line")
      if parts[0] in out:
        raise ValueError(f"{os.fspath(path)}:{line_no}: query {parts[0]!r} appears twice")
      out[parts[0]] = parts[1:]
  return out


def write_results(out_dir: str | os.PathLike, results: dict[str, dict],
                  ns: Sequence[int] = (1, 5, 10, 20)) -> tuple[str, str]:
  """Writes `results.json` and `results.md` (`visualize.results_markdown`) into `out_dir`.

  Args:
    out_dir: directory (created).
    results: name -> result dict (e.g. {"trained": evaluate_retrieval(...)[0]}).
    ns: columns of the markdown table.

  Returns:
    (json path, markdown path).
  """
  json_path = gcl_io.join(out_dir, "results.json")
  md_path = gcl_io.join(out_dir, "results.md")
  _write_text(json_path, json.dumps(results, indent=1, sort_keys=True) + "\n")
  _write_text(md_path, results_markdown(results, ns=ns))
  return json_path, md_path

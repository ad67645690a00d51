"""Per-query CSV, MSLS prediction file and results.json/markdown outputs."""

import csv
import io
import json

import numpy as np
import pytest

from gcl_jax.types import ImageTable
from gcl_jax.evaluation.protocols import (CityEval, CityRanking, evaluate_rankings,
                                          evaluate_retrieval)
from gcl_jax.evaluation.report import (PER_QUERY_COLUMNS, per_query_csv, predictions_text,
                                       read_predictions, write_per_query_csv, write_predictions,
                                       write_results)


def make_table(name, rows):
  keys = np.array([r[0] for r in rows])
  pano = np.array([r[3] for r in rows], bool)
  return ImageTable(root="/toy", name=name, paths=np.array([f"{name}/{k}.jpg" for k in keys]),
                    keys=keys, utm=np.array([[r[1], r[2]] for r in rows], np.float64),
                    heading=np.zeros(len(rows)), pano=pano, night=np.zeros(len(rows), bool),
                    in_all=np.array([r[4] for r in rows], bool))


def g8_tables():
  cq = make_table("cph/query", [("q0", 0, 0, False, True), ("q1", 100, 0, False, True),
                                ("q2", 0, 0, True, True), ("q3", 500, 500, False, True),
                                ("q4", 0, 0, False, False)])
  cdb = make_table("cph/database", [("d0", 10, 0, False, True), ("d1", 25, 0, False, True),
                                    ("d2", 25.01, 0, False, True), ("d3", 100, 5, False, True),
                                    ("d4", 0, 1, True, True)])
  sq = make_table("sf/query", [("s0", 0, 0, False, True), ("s1", 1000, 0, False, True)])
  sdb = make_table("sf/database", [("e0", 3, 4, False, True), ("e1", 30, 0, False, True)])
  return cq, cdb, sq, sdb


def g8_retrieval():
  cq, cdb, sq, sdb = g8_tables()
  c_q = np.zeros((5, 5))
  c_q[0, [4, 1]] = [1.0, 0.5]
  c_q[1, [3, 0]] = [1.0, 0.5]
  s_q = np.array([[0.5, 1.0], [1.0, 0.0]])
  return evaluate_retrieval([CityEval(cq, cdb, c_q, np.eye(5), name="cph"),
                             CityEval(sq, sdb, s_q, np.eye(2), name="sf")], ns=(1, 2), k=3)


def test_per_query_csv():
  _, details = g8_retrieval()
  rows = list(csv.DictReader(io.StringIO(per_query_csv(details))))
  assert tuple(rows[0]) == PER_QUERY_COLUMNS
  got = [(r["city"], r["query_key"], int(r["first_positive_rank"]), int(r["num_positives"]))
         for r in rows]
  # q0: d4 (pano, miss) then d1 (positive); q1: d3 first; s0: e1 then e0.
  assert got == [("cph", "q0", 2, 2), ("cph", "q1", 1, 1), ("sf", "s0", 2, 1)]
  # Squared L2 from q0 = (0, .5, 0, 0, 1) to the one-hot d4: 0.5^2 + (1 - 1)^2 = 0.25.
  assert float(rows[0]["top1_distance"]) == pytest.approx(0.25)


def test_first_positive_rank_is_minus_one_without_hit_and_distance_blank_for_rankings(tmp_path):
  cq, cdb, _, _ = g8_tables()
  ranked = np.array([[4, 2], [0, 1], [0, 1], [0, 1], [0, 1]])  # q0 and q1 miss.
  _, details = evaluate_rankings([CityRanking(cq, cdb, ranked, name="cph")], ns=(1, 2))
  path = tmp_path / "out" / "per_query.csv"
  write_per_query_csv(path, details)
  rows = list(csv.DictReader(open(path)))
  assert [(r["query_key"], r["first_positive_rank"], r["top1_distance"]) for r in rows] == [
      ("q0", "-1", ""), ("q1", "-1", "")]


def test_predictions_file_round_trips_through_the_toolkit_format(tmp_path):
  _, details = g8_retrieval()
  assert predictions_text(details, k=2) == "q0 d4 d1\nq1 d3 d0\ns0 e1 e0\n"  # G8 rows.
  path = tmp_path / "pred.txt"
  write_predictions(path, details)
  preds = read_predictions(path)
  assert preds["q0"][:2] == ["d4", "d1"] and len(preds["q0"]) == 3
  assert preds["s0"] == ["e1", "e0"]  # sf has 2 images: the -1 slot is left out.
  # Scoring the file again gives the same recall.
  cq, cdb, sq, sdb = g8_tables()
  cities = []
  for name, q, db in (("cph", cq, cdb), ("sf", sq, sdb)):
    index = {k: i for i, k in enumerate(db.keys)}
    ranked = np.full((len(q), 3), -1)
    for r, key in enumerate(q.keys):
      for c, dkey in enumerate(preds.get(key, [])):
        ranked[r, c] = index[dkey]
    cities.append(CityRanking(q, db, ranked, name=name))
  rescored, _ = evaluate_rankings(cities, ns=(1, 2))
  original, _ = g8_retrieval()
  assert rescored["recall@1"] == original["recall@1"] and rescored["map@2"] == original["map@2"]
  (tmp_path / "dup.txt").write_text("q0 d1\nq0 d2\n")
  with pytest.raises(ValueError, match=r"dup.txt:2: query 'q0' appears twice"):
    read_predictions(tmp_path / "dup.txt")
  with pytest.raises(ValueError, match="k must be a positive integer or None, got 0"):
    predictions_text(details, k=0)


def test_write_results_reuses_the_markdown_table(tmp_path):
  result, _ = g8_retrieval()
  json_path, md_path = write_results(tmp_path / "eval", {"trained": result}, ns=(1, 2))
  loaded = json.load(open(json_path))
  assert loaded["trained"]["protocol"] == "msls_per_city"
  assert loaded["trained"]["num_queries"] == 3
  md = open(md_path).read()
  assert md.splitlines()[0] == "|  | R@1 | R@2 | queries | database | protocol |"
  assert "| trained | 33.3 | 100.0 | 3 | 7 | msls_per_city |" in md


def test_submission_covers_every_query_without_ground_truth():
  from gcl_jax.evaluation.report import submission_text
  cq, cdb, _, _ = g8_tables()
  nan_q = ImageTable(**{**cq.__dict__, "utm": np.full((5, 2), np.nan)})  # Test city: no GPS.
  c_q = np.zeros((5, 5))
  c_q[0, [4, 1]] = [1.0, 0.5]
  c_q[1, [3, 0]] = [1.0, 0.5]
  text = submission_text([CityEval(nan_q, cdb, c_q, np.eye(5), name="miami")], k=2)
  lines = text.splitlines()
  assert len(lines) == 5 and lines[:2] == ["q0 d4 d1", "q1 d3 d0"]
  assert lines[4] == "q4 d0 d1"  # All-zero descriptor: ties broken by database index.

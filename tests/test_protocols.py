"""Tests of the MSLS ground truth and of per-city pooled evaluation (golden G8)."""

import json
import pathlib

import numpy as np
import pytest

from conftest import DATA
from gcl_jax.types import ImageTable
from gcl_jax.evaluation import (CityEval, CityRanking, evaluate_rankings, evaluate_retrieval,
                                msls_ground_truth)

GOLDEN = json.loads(
    (pathlib.Path(__file__).parent / "data" / "golden_toy_validate.json").read_text())
# Copy of the reference toy MSLS tree (built by the reference's make_toy_msls.py).
TOY_TREE = DATA / "toy_msls"


def make_table(name: str, rows: list[tuple]) -> ImageTable:
  """ImageTable from rows (key, easting, northing, pano, in_all)."""
  keys = np.array([r[0] for r in rows])
  n = len(rows)
  pano = np.array([r[3] for r in rows], bool)
  return ImageTable(root="/toy", name=name, paths=np.array([f"{name}/images/{k}.jpg" for k in keys]),
                    keys=keys, utm=np.array([[r[1], r[2]] for r in rows], np.float64),
                    heading=np.where(pano, np.nan, 0.0), pano=pano, night=np.zeros(n, bool),
                    in_all=np.array([r[4] for r in rows], bool))


def toy_cities() -> dict[str, tuple[ImageTable, ImageTable]]:
  """The toy MSLS-val tree of the reference's make_toy_msls.py, built in memory."""
  return {
      "cph": (make_table("train_val/cph/query", [
          ("q0", 0.0, 0.0, False, True), ("q1", 100.0, 0.0, False, True),
          ("q2", 0.0, 0.0, True, True), ("q3", 500.0, 500.0, False, True),
          ("q4", 0.0, 0.0, False, False)]),
              make_table("train_val/cph/database", [
                  ("d0", 10.0, 0.0, False, True), ("d1", 25.0, 0.0, False, True),
                  ("d2", 25.01, 0.0, False, True), ("d3", 100.0, 5.0, False, True),
                  ("d4", 0.0, 1.0, True, True)])),
      "sf": (make_table("train_val/sf/query", [
          ("s0", 0.0, 0.0, False, True), ("s1", 1000.0, 0.0, False, True)]),
             make_table("train_val/sf/database", [
                 ("e0", 3.0, 4.0, False, True), ("e1", 30.0, 0.0, False, True)])),
  }


def tree_toy_cities() -> dict[str, tuple[ImageTable, ImageTable]]:
  from gcl_jax.data.msls import read_msls_city  # Imports TensorFlow: only in this test.
  return {c: read_msls_city(str(TOY_TREE), c) for c in ("cph", "sf")}


SOURCES = [
    pytest.param(toy_cities, id="in_memory"),
    pytest.param(tree_toy_cities, id="toy_tree"),
]


# Upstream prediction file rows of G8 (the non-evaluated queries' rows are irrelevant).
PREDICTIONS = {"q0": ["d4", "d1"], "q1": ["d3", "d0"], "s0": ["e1", "e0"]}


@pytest.mark.parametrize("make_cities", SOURCES)
def test_ground_truth_matches_toolkit_golden(make_cities):
  cities = make_cities()
  gold = GOLDEN["msls_val_toy"]
  gold_db = [p[:-4] for p in gold["dbImages"]]
  gold_q = [p[:-4] for p in gold["qImages"]]
  want_eval = [gold_q[i] for i in gold["qIdx"]]
  want_pos = [sorted(gold_db[i] for i in p) for p in gold["pIdx"]]
  got_eval, got_pos, no_match = [], [], []
  for query, database in cities.values():
    idx, pos, info = msls_ground_truth(query, database)
    got_eval += query.keys[idx].tolist()
    got_pos += [sorted(database.keys[p].tolist()) for p in pos]
    candidates = query.in_all & ~query.pano
    no_match += [k for k in query.keys[candidates] if k not in query.keys[idx]]
    assert not database.pano[np.concatenate(pos)].any()
  assert got_eval == want_eval == ["q0", "q1", "s0"]
  assert got_pos == want_pos == [["d0", "d1"], ["d3"], ["e0"]]
  assert no_match == gold["query_keys_with_no_match"]


def test_exclusion_counts():
  (cq, cdb), (sq, sdb) = toy_cities().values()
  _, _, info = msls_ground_truth(cq, cdb)
  assert info == {"num_queries_total": 5, "num_queries_evaluated": 2, "num_excluded_no_positive": 1,
                  "num_excluded_pano": 1, "num_excluded_not_in_all": 1, "num_database": 5,
                  "num_database_pano": 1}
  _, _, info = msls_ground_truth(sq, sdb)
  assert info["num_queries_evaluated"] == 1 and info["num_excluded_no_positive"] == 1
  # A panorama outside `all` counts once, under the first rule (not in `all`).
  q = make_table("q", [("a", 0, 0, True, False), ("b", 0, 0, False, True)])
  db = make_table("db", [("x", 1, 0, False, True)])
  idx, _, info = msls_ground_truth(q, db)
  assert idx.tolist() == [1]
  assert (info["num_excluded_not_in_all"], info["num_excluded_pano"]) == (1, 0)


@pytest.mark.parametrize("offset", [(0.0, 0.0), (512345.67, 6123456.78)])
def test_radius_boundary_is_included_and_just_outside_excluded(offset):
  e, n = offset
  q = make_table("q", [("q", e, n, False, True)])
  db = make_table("db", [("at", e + 15.0, n + 20.0, False, True),  # Exactly 25 m (3-4-5).
                         ("out", e + 25.01, n, False, True),
                         ("at_x", e - 25.0, n, False, True),
                         ("pano", e, n, True, True)])
  _, pos, _ = msls_ground_truth(q, db)
  assert db.keys[pos[0]].tolist() == ["at", "at_x"]
  _, pos, _ = msls_ground_truth(q, db, radius_m=25.02)
  assert db.keys[pos[0]].tolist() == ["at", "out", "at_x"]


def test_bad_radius_is_rejected():
  q, db = toy_cities()["cph"]
  for radius in (0.0, -1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="radius_m must be a positive finite"):
      msls_ground_truth(q, db, radius_m=radius)


def _ranked_rows(query: ImageTable, database: ImageTable) -> np.ndarray:
  """Prediction rows as database indices, one row per query row (-1 where there is none)."""
  index = {k: i for i, k in enumerate(database.keys)}
  out = np.full((len(query), 2), -1, np.int64)
  for r, key in enumerate(query.keys):
    if key in PREDICTIONS:
      out[r] = [index[k] for k in PREDICTIONS[key]]
  return out


@pytest.mark.parametrize("make_cities", SOURCES)
def test_toy_validation_golden_g8(make_cities):
  cities = [CityRanking(q, db, _ranked_rows(q, db), name=c) for c, (q, db) in make_cities().items()]
  result, details = evaluate_rankings(cities)
  for key, value in GOLDEN["validate_metrics"].items():
    want = 100.0 * value if key.startswith("recall") else value
    assert result[key] == pytest.approx(want, abs=1e-12), key
  assert result["recall@1"] == pytest.approx(100 / 3) and result["map@5"] == pytest.approx(0.5833,
                                                                                          abs=1e-4)
  assert (result["num_queries"], result["num_database"], result["num_excluded"]) == (3, 7, 4)
  assert result["protocol"] == "msls_per_city" and result["radius_m"] == 25.0
  # The panorama d4 stays in q0's ranking, as a miss at rank 1.
  cph = details[0]
  assert cph.database.keys[cph.ranked[0, 0]] == "d4" and 4 not in cph.positives[0]
  assert cph.ranked.shape == (2, 20) and (cph.ranked[:, 2:] == -1).all()


def test_evaluate_retrieval_end_to_end_with_panorama_ranked_first():
  cities = toy_cities()
  cq, cdb = cities["cph"]
  sq, sdb = cities["sf"]
  c_db = np.eye(5)
  c_q = np.zeros((5, 5))
  c_q[0, [4, 1]] = [1.0, 0.5]  # q0: panorama d4, then d1, then ties d0 < d2 < d3 by index.
  c_q[1, [3, 0]] = [1.0, 0.5]  # q1: d3 (positive) first.
  s_db = np.eye(2)
  s_q = np.array([[0.2, 1.0], [1.0, 0.0]])  # s0: e1 (miss) then e0.
  result, details = evaluate_retrieval([CityEval(cq, cdb, c_q, c_db, name="cph"),
                                        CityEval(sq, sdb, s_q, s_db, name="sf")])
  assert details[0].database.keys[details[0].ranked[0, :5]].tolist() == ["d4", "d1", "d0", "d2",
                                                                          "d3"]
  assert details[0].query_paths() == ["/toy/train_val/cph/query/images/q0.jpg",
                                      "/toy/train_val/cph/query/images/q1.jpg"]
  assert details[1].ranked.shape == (1, 20) and (details[1].ranked[0, 2:] == -1).all()
  assert np.isnan(details[1].distances[0, 2:]).all()
  assert result["recall@1"] == pytest.approx(100 / 3)
  assert result["recall@5"] == result["recall@20"] == 100.0
  assert result["map@1"] == pytest.approx(1 / 3)
  # AP@5: q0 hits at ranks 2 and 3 -> (1/2 + 2/3) / 2; q1 -> 1; s0 hit at rank 2 -> 1/2.
  assert result["map@5"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 + 1 / 2) / 3)
  assert (result["num_queries"], result["num_excluded"], result["num_cities"]) == (3, 4, 2)
  assert result["num_excluded_pano"] == 1 and result["num_database_pano"] == 1
  # k larger than the biggest database, and "ip" on the same one-hot descriptors.
  result_k30, details = evaluate_retrieval([CityEval(cq, cdb, c_q, c_db)], k=30, metric="ip")
  assert details[0].ranked.shape == (2, 20) and details[0].name == "train_val/cph/query"
  assert result_k30["recall@1"] == 50.0


def test_evaluate_retrieval_input_errors():
  cq, cdb = toy_cities()["cph"]
  ok = CityEval(cq, cdb, np.zeros((5, 3)), np.eye(5, 3))
  with pytest.raises(ValueError, match="unknown evaluation protocol 'pitts'"):
    evaluate_retrieval([ok], protocol="pitts")
  with pytest.raises(ValueError, match=r"k \(retrievals per query\) must be an integer >= "
                                       r"max\(ns\) = 20, got 10"):
    evaluate_retrieval([ok], k=10)
  with pytest.raises(ValueError, match=r"`db_desc` must have shape \(5, D\)"):
    evaluate_retrieval([CityEval(cq, cdb, np.zeros((5, 3)), np.eye(4, 3))])
  bad = np.zeros((5, 3))
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="`q_desc` row 3 \\(key 'q3'\\) has non-finite"):
    evaluate_retrieval([CityEval(cq, cdb, bad, np.eye(5, 3))])
  with pytest.raises(ValueError, match="cities is empty"):
    evaluate_retrieval([])
  far = make_table("db", [("x", 1e5, 0, False, True)])
  with pytest.raises(ValueError, match="no query has a positive within 25.0 m"):
    evaluate_retrieval([CityEval(cq, far, np.zeros((5, 3)), np.zeros((1, 3)))])


def test_evaluate_rankings_input_errors():
  cq, cdb = toy_cities()["cph"]
  with pytest.raises(ValueError, match=r"`ranked` must have shape \(5, k\)"):
    evaluate_rankings([CityRanking(cq, cdb, np.zeros((4, 2), np.int64))])
  with pytest.raises(ValueError, match=r"ranked\[1, 0\] = 5 is not a row of database"):
    evaluate_rankings([CityRanking(cq, cdb, np.array([[0, 1], [5, 0]] + [[0, 1]] * 3))])

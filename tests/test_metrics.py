"""Tests of recall@N / mAP@N against the MSLS toolkit goldens (G7) and the definitions."""

import json
import pathlib

import numpy as np
import pytest

from gcl_jax.evaluation import recall_at_n

GOLDEN = json.loads((pathlib.Path(__file__).parent / "data" / "golden_msls_eval.json").read_text())


def _rank_from_prediction_rows(rows: list[list[str]], query_keys: list[str],
                               db_keys: list[str]) -> np.ndarray:
  """Turns toolkit prediction rows `[qkey, dbkey1, ...]` into a ranked index array in query order.

  Keys not in `db_keys` (e.g. the toolkit example's typo "BD5") get fresh indices past the database,
  so they are always misses.
  """
  index = {k: i for i, k in enumerate(db_keys)}
  by_query = {r[0]: r[1:] for r in rows}
  extra: dict[str, int] = {}
  ranked = []
  for q in query_keys:
    ranked.append([index.get(k, extra.setdefault(k, len(db_keys) + len(extra)))
                   for k in by_query[q]])
  return np.array(ranked)


def _expected(golden: dict) -> dict:
  """Toolkit goldens hold fractions; recall_at_n returns recall in percent."""
  return {k: 100.0 * v if k.startswith("recall") else v for k, v in golden.items()}


def test_builtin_toolkit_example_golden():
  db = [f"DB{i}" for i in range(6)]
  rows = [["Q1", "DB0", "DB1", "DB2", "DB3", "DB4", "BD5"],
          ["Q2", "DB0", "DB5", "DB4", "DB1", "DB3", "DB2"]]
  ranked = _rank_from_prediction_rows(rows, ["Q1", "Q2"], db)
  positives = [np.array([4, 5]), np.array([0, 1])]
  got = recall_at_n(ranked, positives, ns=(1, 2, 3))
  want = _expected(GOLDEN["builtin_example_ks_1_2_3"])
  assert list(got) == list(want)
  for key, value in want.items():
    assert got[key] == pytest.approx(value, abs=1e-12), key


def test_toy4_golden_with_shuffled_prediction_rows():
  db = [f"d{i}" for i in range(10)]
  rows = [["q2", "d9", "d3", "d1", "d7", "d0"],
          ["q0", "d1", "d2", "d3", "d4", "d5"],
          ["q3", "d6", "d7", "d8", "d9", "d0"],
          ["q1", "d5", "d4", "d3", "d2", "d1"]]
  ranked = _rank_from_prediction_rows(rows, ["q0", "q1", "q2", "q3"], db)
  positives = [np.array([1]), np.array([2, 9]), np.array([7, 3, 8]), np.array([4])]
  got = recall_at_n(ranked, positives, ns=(1, 2, 3, 5))
  want = _expected(GOLDEN["toy4_ks_1_2_3_5"])
  assert list(got) == list(want)
  for key, value in want.items():
    assert got[key] == pytest.approx(value, abs=1e-12), key


def _reference(ranked, positives, ns):
  """Straight loop over the toolkit definitions (recall as a fraction)."""
  out = {}
  for n in ns:
    rec, aps = [], []
    for row, pos in zip(ranked, positives):
      row = list(row[:n])
      rec.append(any(p in pos for p in row))
      score, hits = 0.0, 0.0
      for i, p in enumerate(row):
        if p in pos and p not in row[:i]:
          hits += 1.0
          score += hits / (i + 1.0)
      aps.append(score / min(len(pos), n))
    out[f"recall@{n}"] = 100.0 * np.mean(rec)
    out[f"map@{n}"] = np.mean(aps)
  return out


def test_matches_definition_on_random_rankings_with_duplicates_and_padding():
  rng = np.random.default_rng(0)
  num_q, k, num_db = 60, 12, 15
  ranked = rng.integers(-1, num_db, size=(num_q, k))  # Repeats and -1 padding on purpose.
  positives = [rng.choice(num_db, size=rng.integers(1, 6), replace=False) for _ in range(num_q)]
  ns = (1, 3, 5, 12)
  got = recall_at_n(ranked, positives, ns)
  want = _reference(ranked, [set(p.tolist()) for p in positives], ns)
  for key, value in want.items():
    assert got[key] == pytest.approx(value, abs=1e-12), key


def test_repeated_positive_counts_once_and_padding_is_a_miss():
  got = recall_at_n(np.array([[3, 3, -1, 4]]), [np.array([3, 4])], ns=(1, 2, 4))
  assert got["recall@1"] == 100.0
  assert got["map@2"] == pytest.approx(0.5)  # Second 3 is not a new hit; min(2, 2) = 2.
  assert got["map@4"] == pytest.approx((1 + 2 / 4) / 2)
  miss = recall_at_n(np.array([[-1, -1]]), [np.array([0])], ns=(2,))
  assert miss == {"recall@2": 0.0, "map@2": 0.0}


def test_map_is_a_fraction_and_recall_a_percentage():
  got = recall_at_n(np.array([[0, 1], [1, 0]]), [np.array([0]), np.array([0])], ns=(1, 2))
  assert got["recall@1"] == 50.0 and got["recall@2"] == 100.0
  assert got["map@1"] == 0.5 and got["map@2"] == pytest.approx(0.75)


def test_query_without_positives_is_rejected():
  with pytest.raises(ValueError, match="query 1 has no positives"):
    recall_at_n(np.array([[0, 1], [1, 0]]), [np.array([0]), np.array([], np.int64)], ns=(1,))


def test_n_larger_than_k_is_rejected():
  with pytest.raises(ValueError, match="N=5 is larger than the number of ranked columns k=2"):
    recall_at_n(np.array([[0, 1]]), [np.array([0])], ns=(1, 5))


@pytest.mark.parametrize("ranked, positives, match", [
    (np.array([0, 1]), [np.array([0])], "2-D"),
    (np.zeros((0, 3), np.int64), [], "no queries"),
    (np.array([[0.0, 1.0]]), [np.array([0])], "integer"),
    (np.array([[0, -2]]), [np.array([0])], r"ranked\[0, 1\] = -2"),
    (np.array([[0, 1]]), [np.array([0]), np.array([1])], "positives has 2 entries"),
    (np.array([[0, 1]]), [np.array([1, 1])], "repeated"),
    (np.array([[0, 1]]), [np.array([-3])], "negative"),
])
def test_malformed_inputs_are_rejected(ranked, positives, match):
  with pytest.raises(ValueError, match=match):
    recall_at_n(ranked, positives, ns=(1,))


@pytest.mark.parametrize("ns", [(), (0,), (1, 1), (2.0,)])
def test_bad_cutoffs_are_rejected(ns):
  with pytest.raises(ValueError, match="ns|N"):
    recall_at_n(np.array([[0, 1]]), [np.array([0])], ns=ns)

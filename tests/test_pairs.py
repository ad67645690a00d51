"""Pair sampler: the authors' rates (golden_pairs.json, G6) and candidate rules, determinism."""

import json

import numpy as np
import pytest

from gcl_jax.data.pairs import CityPairs, sample_epoch
from gcl_jax.types import ImageTable
from gcl_jax.types import PairTable


def table(name, n, pano=()):
  return ImageTable(root="/r", name=name, paths=np.array([f"{name}/{i}.jpg" for i in range(n)]),
                    keys=np.array([f"{name}{i}" for i in range(n)]), utm=np.zeros((n, 2)),
                    heading=np.zeros(n), pano=np.isin(np.arange(n), pano),
                    night=np.zeros(n, bool), in_all=np.ones(n, bool))


def labels_from_dense(psi, sim=None):
  psi = np.asarray(psi, np.float32)
  sim = np.zeros_like(psi, np.int8) if sim is None else np.asarray(sim, np.int8)
  listed = (psi > 0) | (sim != 0)
  q, d = np.nonzero(listed)
  indptr = np.concatenate([[0], np.cumsum(listed.sum(1))]).astype(np.int64)
  return PairTable(psi.shape[0], psi.shape[1], indptr, d.astype(np.int32), psi[q, d], sim[q, d],
                   np.zeros(len(q), np.float32))


def golden_cities():
  cph = CityPairs("cph", table("q", 5, pano=[2]), table("d", 5, pano=[4]), labels_from_dense(
      [[0.8, 0.3, 0.0, 0.5, 0.9], [0, 0, 0, 0.7, 0], [0.9, 0, 0, 0, 0], [0, 0, 0, 0, 0],
       [0.2, 0, 0, 0, 0]]))
  sf = CityPairs("sf", table("s", 2), table("e", 2), labels_from_dense([[0.6, 0.1], [0, 0]]))
  return [cph, sf]


def test_rates_match_the_authors_sampler(data_dir):
  golden = json.loads((data_dir / "golden_pairs.json").read_text())
  cities = golden_cities()
  epochs = [sample_epoch(cities, seed=0, epoch=e) for e in range(4000)]
  names = {(0, 0): "q0", (0, 1): "q1", (0, 3): "q3", (0, 4): "q4", (1, 0): "s0", (1, 1): "s1"}
  counts = {n: 0 for n in names.values()}
  freq = {}
  for ep in epochs:
    for c, q, d, y in zip(ep.city, ep.query, ep.database, ep.label):
      assert (c, q) in names, "panoramic query sampled"
      assert not (c == 0 and d == 4), "panoramic database image sampled"
      counts[names[(c, q)]] += 1
      key = f"{names[(c, q)]}-{'de'[c]}{d}-{y:.1f}"
      freq[key] = freq.get(key, 0) + 1
  for name, rate in golden["pairs_per_load_per_query"].items():
    assert abs(counts[name] / 4000 - rate) < 0.03, name
  mean = sum(len(ep) for ep in epochs) / 4000
  assert abs(mean - golden["mean_pairs_per_load"]) < 0.05
  for key, rate in golden["pair_frequencies"].items():
    assert abs(freq.get(key, 0) / 4000 - rate) < 0.03, key


def test_expected_rates_in_closed_form():
  """q0 has all strata: 1 pair per epoch; q1 lacks soft: 0.75; q3 only hard: 0.25."""
  cities = golden_cities()
  n = 2000
  eps = [sample_epoch(cities, seed=1, epoch=e) for e in range(n)]
  q1 = sum(int(np.sum((ep.city == 0) & (ep.query == 1))) for ep in eps) / n
  q3 = sum(int(np.sum((ep.city == 0) & (ep.query == 3))) for ep in eps) / n
  assert abs(q1 - 0.75) < 0.04 and abs(q3 - 0.25) < 0.04


def test_candidate_rules_exactly():
  cities = golden_cities()
  seen = set()
  for e in range(400):
    ep = sample_epoch(cities, seed=2, epoch=e)
    for c, q, d, y, s in zip(ep.city, ep.query, ep.database, ep.label, ep.stratum):
      psi = cities[c].labels.dense()[q, d]
      assert y == psi
      assert {0: psi >= 0.5, 1: 0 < psi < 0.5, 2: psi == 0}[int(s)]
      seen.add((int(c), int(q), int(d)))
  # every non-panoramic candidate of q0 is reachable, the panorama d4 never
  assert {(0, 0, d) for d in range(4)} <= seen and (0, 0, 4) not in seen


def test_redraw_keeps_every_query():
  cities = golden_cities()
  for e in range(50):
    ep = sample_epoch(cities, seed=0, epoch=e, empty_stratum="redraw")
    assert len(ep) == 6  # all non-panoramic queries


def test_binary_sampler_uses_sim():
  sim = [[1, -1, 0], [0, 0, 0]]
  city = CityPairs("c", table("q", 2), table("d", 3),
                   labels_from_dense(np.zeros((2, 3)), sim))
  pos = neg = 0
  for e in range(300):
    ep = sample_epoch([city], seed=0, epoch=e, binary=True)
    for q, d, y in zip(ep.query, ep.database, ep.label):
      assert (q, d) != (0, 1), "ambiguous pair sampled"
      assert y == (1.0 if (q, d) == (0, 0) else 0.0)
      pos += y == 1
      neg += (q == 0) and y == 0
  assert abs(pos / (pos + neg) - 0.5) < 0.1


def test_deterministic_in_seed_and_epoch():
  cities = golden_cities()
  a = sample_epoch(cities, seed=3, epoch=7, chunk_size=3)
  b = sample_epoch(cities, seed=3, epoch=7, chunk_size=3)
  c = sample_epoch(cities, seed=3, epoch=8, chunk_size=3)
  for f in ("city", "query", "database", "label"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert any(not np.array_equal(getattr(a, f), getattr(c, f)) for f in ("query", "database"))


def test_stale_labels_are_refused():
  with pytest.raises(ValueError, match="stale"):
    CityPairs("c", table("q", 3), table("d", 3), labels_from_dense(np.zeros((2, 3))))


def test_bad_strata_probs():
  with pytest.raises(ValueError, match="strata_probs"):
    sample_epoch(golden_cities(), seed=0, epoch=0, strata_probs=(0.5, 0.5, 0.5))

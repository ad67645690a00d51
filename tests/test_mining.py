"""Hard-negative mining: tuple selection on hand-built descriptors, sub-caches of synthetic cities."""

import dataclasses
import os
import zlib

import numpy as np
import pytest

from gcl_jax.data.mining import (TOOLKIT_MARGIN, MiningConfig, TupleCache, mine_subcache,
                                 num_subcaches, select_tuples, subcache_queries,
                                 training_queries)
from gcl_jax.data.pairs import CityPairs
from gcl_jax.labels.fov2d import city_pair_table
from gcl_jax.labels.synthetic_city import street_city

# ----- select_tuples on hand-built descriptors -------------------------------------------------


def line_setup():
  """Query 0 at the origin, query 1 at (10, 0); distances chosen by hand."""
  q = np.array([[0.0, 0.0], [10.0, 0.0]])
  pos = np.array([[0.3, 0.0], [0.1, 0.0], [10.0, 0.2], [10.0, 0.25]])
  pos_indptr = np.array([0, 2, 4])  # query 0: rows 0, 1; query 1: rows 3, 2
  pos_rows = np.array([0, 1, 3, 2])
  # Distances from query 0: 0.5, 0.2, 0.9, 0.05, 0.4, 0.3.
  neg = np.array([[0.0, 0.5], [0.0, 0.2], [0.0, 0.9], [0.05, 0.0], [0.0, 0.4], [0.0, -0.3]])
  valid = np.ones((2, 6), bool)
  valid[0, 3] = False  # the nearest candidate is too close to query 0 on the map
  valid[0, 5] = False
  return q, pos, pos_indptr, pos_rows, neg, valid


def test_select_nearest_positive_and_hardest_valid_negatives():
  q, pos, indptr, rows, neg, valid = line_setup()
  sel = select_tuples(q, pos, indptr, rows, neg, valid, margin=0.2, num_negatives=2,
                      keep_rule="violating")
  # Query 0: positive row 1 (0.1 < 0.3); valid negatives by distance: 1 (0.2), 4 (0.4), 0, 2.
  # Query 1: its negatives are all ~10 away, its positive at 0.2: nothing violates -> dropped.
  np.testing.assert_array_equal(sel.query, [0])
  np.testing.assert_array_equal(sel.positive, [1])
  np.testing.assert_array_equal(sel.negatives, [[1, 4]])
  # Without the mask, the hardest would have been 3 (0.05) and 5 (0.3).
  sel = select_tuples(q, pos, indptr, rows, neg, np.ones_like(valid), margin=0.2,
                      num_negatives=2, keep_rule="violating")
  np.testing.assert_array_equal(sel.negatives, [[3, 1]])


def test_select_positive_of_second_query_and_three_negatives():
  q, pos, indptr, rows, neg, valid = line_setup()
  neg = neg.copy()
  neg[2] = [10.0, 0.21]  # now query 1 has a violating candidate (0.21 < 0.2 + 0.2)
  sel = select_tuples(q, pos, indptr, rows, neg, valid, margin=0.2, num_negatives=3,
                      keep_rule="violating")
  np.testing.assert_array_equal(sel.query, [0, 1])
  np.testing.assert_array_equal(sel.positive, [1, 2])  # query 1: row 2 (0.2) beats row 3 (0.25)
  np.testing.assert_array_equal(sel.negatives[0], [1, 4, 0])
  assert sel.negatives[1, 0] == 2


def test_violating_rule_margin_and_candidate_count():
  q, pos, indptr, rows, neg, valid = line_setup()
  # Query 0: d_pos = 0.1, hardest valid negative 0.2: kept iff 0.2 < 0.1 + margin.
  for margin, kept in ((0.11, [0]), (0.1, []), (0.05, [])):
    sel = select_tuples(q, pos, indptr, rows, neg, valid, margin=margin, num_negatives=2,
                        keep_rule="violating")
    np.testing.assert_array_equal(sel.query, kept)
  # 4 valid candidates: N = 4 is enough, N = 5 is not.
  assert len(select_tuples(q, pos, indptr, rows, neg, valid, margin=1, num_negatives=4,
                           keep_rule="violating").query) == 1
  sel = select_tuples(q, pos, indptr, rows, neg, valid, margin=1, num_negatives=5,
                      keep_rule="violating")
  assert len(sel.query) == 0 and sel.negatives.shape == (0, 5)


def test_query_without_positives_is_dropped():
  q, pos, _, _, neg, valid = line_setup()
  sel = select_tuples(q, pos, np.array([0, 0, 2]), np.array([2, 3]), neg, np.ones_like(valid),
                      margin=100.0, num_negatives=2, keep_rule="violating")
  np.testing.assert_array_equal(sel.query, [1])


def unit(deg):
  return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])


def test_toolkit_rule_counts_similarities_strictly_above_n():
  """s_n < s_p + margin must hold for MORE than N valid candidates; the N most similar win."""
  q = unit(0)[None]
  pos = unit(60)[None]  # s_p = 0.5
  sims = [0.95, 0.9, 0.3, 0.2, 0.1]  # the first two are not counted (> 0.5 + 0.1)
  neg = np.stack([unit(np.degrees(np.arccos(s))) for s in sims])
  common = dict(margin=0.1, num_negatives=2, keep_rule="toolkit")
  # Four candidates of which two count: 2 > 2 is false -> dropped.
  sel = select_tuples(q, pos, [0, 1], [0], neg, np.array([[1, 1, 1, 1, 0]], bool), **common)
  assert len(sel.query) == 0
  # Three count -> kept; the negatives are the two most similar, which do not count.
  sel = select_tuples(q, pos, [0, 1], [0], neg, np.ones((1, 5), bool), **common)
  np.testing.assert_array_equal(sel.query, [0])
  np.testing.assert_array_equal(sel.negatives, [[0, 1]])
  # The same tuple under the distance rule: its hardest negative violates -> kept too.
  sel = select_tuples(q, pos, [0, 1], [0], neg, np.ones((1, 5), bool), margin=0.1,
                      num_negatives=2, keep_rule="violating")
  np.testing.assert_array_equal(sel.negatives, [[0, 1]])


def test_select_rejects_inconsistent_inputs():
  q, pos, indptr, rows, neg, valid = line_setup()
  with pytest.raises(ValueError, match=r"neg_valid must have shape \(2, 6\)"):
    select_tuples(q, pos, indptr, rows, neg, valid[:, :5], margin=0.1, num_negatives=2)
  with pytest.raises(ValueError, match="pos_rows must index the 4 rows"):
    select_tuples(q, pos, indptr, rows + 1, neg, valid, margin=0.1, num_negatives=2)
  with pytest.raises(ValueError, match=r"neg_desc must have shape \(n, 2\)"):
    select_tuples(q, pos, indptr, rows, neg[:, :1], valid, margin=0.1, num_negatives=2)
  with pytest.raises(ValueError, match="keep_rule"):
    select_tuples(q, pos, indptr, rows, neg, valid, margin=0.1, num_negatives=2, keep_rule="x")


# ----- MiningConfig ----------------------------------------------------------------------------


def test_config_defaults_are_the_toolkits():
  c = MiningConfig()
  assert (c.num_negatives, c.cache_queries, c.num_negative_samples) == (5, 1000, 1000)
  assert (c.pos_dist_m, c.neg_dist_m, c.keep_rule) == (10.0, 25.0, "toolkit")
  assert c.margin == pytest.approx(0.1 ** 0.5) and TOOLKIT_MARGIN == c.margin


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_negatives=0), "num_negatives must be a positive integer, got 0"),
    (dict(cache_queries=2.5), "cache_queries"),
    (dict(num_negative_samples=True), "num_negative_samples"),
    (dict(num_negatives=6, num_negative_samples=5), r"num_negative_samples \(5\) must be >="),
    (dict(margin=-0.1), "margin must be a finite non-negative number, got -0.1"),
    (dict(neg_dist_m=float("nan")), "neg_dist_m"),
    (dict(pos_dist_m=30.0), r"pos_dist_m \(30.0\) must not exceed neg_dist_m \(25.0\)"),
    (dict(keep_rule="hardest"), "keep_rule"),
])
def test_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    MiningConfig(**kwargs)


# ----- mine_subcache on synthetic cities -------------------------------------------------------

CONFIG = MiningConfig(num_negatives=3, cache_queries=25, num_negative_samples=40)


@pytest.fixture(scope="module")
def cities():
  out = []
  for name, seed, origin in (("a", 0, (500_000.0, 5_000_000.0)), ("b", 1, (600_000.0, 5_000_000.0))):
    q, db = street_city(50, 160, pano_every=7, seed=seed, origin=origin)
    q = dataclasses.replace(q, root=f"/data/{name}")
    db = dataclasses.replace(db, root=f"/data/{name}")
    out.append(CityPairs(name, q, db, city_pair_table(q, db)))
  return out


class RecordingEmbed:
  """Deterministic descriptors from the path (unit vectors in 8-D); records every call."""

  def __init__(self):
    self.calls = []

  def __call__(self, paths):
    self.calls.append(list(paths))
    return np.stack([self.desc(p) for p in paths])

  @staticmethod
  def desc(path):
    v = np.random.default_rng(zlib.crc32(path.encode())).normal(size=8)
    return (v / np.linalg.norm(v)).astype(np.float32)


def utm_dist(a, b):
  return float(np.hypot(*(a - b)))


def test_training_queries_and_subcaches_partition_them(cities):
  queries = training_queries(cities, CONFIG)
  for c, qs in zip(cities, queries):
    assert len(qs) > 0
    for q in range(len(c.query)):
      ok = (not c.query.pano[q]) and any(
          utm_dist(c.query.utm[q], c.database.utm[j]) <= 10.0 and not c.database.pano[j]
          for j in range(len(c.database)))
      assert (q in qs) == ok
  total = sum(len(q) for q in queries)
  n = num_subcaches(cities, CONFIG)
  assert n == -(-total // 25)
  seen = []
  for s in range(n):
    city, query = subcache_queries(cities, seed=3, epoch=0, subcache=s, config=CONFIG)
    assert len(city) <= 25 and len(city) >= total // n
    seen += list(zip(city.tolist(), query.tolist()))
  want = [(ci, int(q)) for ci, qs in enumerate(queries) for q in qs]
  assert sorted(seen) == sorted(want) and len(seen) == len(set(seen))
  other = subcache_queries(cities, seed=3, epoch=1, subcache=0, config=CONFIG)
  first = subcache_queries(cities, seed=3, epoch=0, subcache=0, config=CONFIG)
  assert set(zip(*map(list, other))) != set(zip(*map(list, first)))
  with pytest.raises(ValueError, match=f"subcache {n} does not exist: epoch 0 has {n}"):
    subcache_queries(cities, seed=3, epoch=0, subcache=n, config=CONFIG)


def test_mine_subcache_tuples(cities):
  embed = RecordingEmbed()
  cache = mine_subcache(cities, seed=3, epoch=0, subcache=1, config=CONFIG, embed=embed)
  assert len(embed.calls) == 3
  q_call, p_call, n_call = embed.calls
  assert cache.images_forwarded == len(q_call) + len(p_call) + len(n_call)
  assert cache.num_queries == len(q_call) == len(subcache_queries(
      cities, seed=3, epoch=0, subcache=1, config=CONFIG)[0])
  assert len(set(p_call)) == len(p_call) and len(set(n_call)) == len(n_call)
  assert len(n_call) <= 40
  assert 0 < len(cache) <= cache.num_queries
  assert cache.negatives.shape == cache.negative_city.shape == (len(cache), 3)
  assert set(cache.negative_city.ravel().tolist()) == {0, 1}  # sampled over both cities

  q_paths, p_paths, n_paths = cache.paths(cities)
  assert set(q_paths) <= set(q_call) and set(p_paths) <= set(p_call)
  assert set(n_paths.ravel()) <= set(n_call)
  for t in range(len(cache)):
    c = cities[cache.city[t]]
    q, p = cache.query[t], cache.positive[t]
    assert q_paths[t] == c.query.full_paths()[q]
    assert not c.query.pano[q]
    # Positive: within pos_dist_m, non-panoramic, the nearest of the query's positives.
    assert utm_dist(c.query.utm[q], c.database.utm[p]) <= 10.0 and not c.database.pano[p]
    positives = [j for j in range(len(c.database)) if not c.database.pano[j]
                 and utm_dist(c.query.utm[q], c.database.utm[j]) <= 10.0]
    qd = embed.desc(q_paths[t]).astype(np.float64)
    dist = lambda path: float(np.linalg.norm(qd - embed.desc(path)))
    best = min(positives, key=lambda j: dist(c.database.full_paths()[j]))
    assert p == best
    # Negatives: non-panoramic, beyond neg_dist_m when in the same city, and exactly the three
    # hardest valid ones among the embedded candidates.
    for n, nc in zip(cache.negatives[t], cache.negative_city[t]):
      assert not cities[nc].database.pano[n]
      if nc == cache.city[t]:
        assert utm_dist(c.query.utm[q], c.database.utm[n]) > 25.0

    def valid(path):
      for ci, other in enumerate(cities):
        if path in other.database.full_paths():
          j = other.database.full_paths().index(path)
          return ci != cache.city[t] or utm_dist(c.query.utm[q], other.database.utm[j]) > 25.0
      raise AssertionError(path)

    hardest = sorted((pth for pth in n_call if valid(pth)), key=dist)[:3]
    assert list(n_paths[t]) == hardest


def test_mine_subcache_is_deterministic_and_changes_with_epoch(cities, tmp_path):
  a = mine_subcache(cities, seed=5, epoch=2, subcache=0, config=CONFIG, embed=RecordingEmbed())
  b = mine_subcache(cities, seed=5, epoch=2, subcache=0, config=CONFIG, embed=RecordingEmbed())
  for f in ("city", "query", "positive", "negatives", "negative_city"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert a.images_forwarded == b.images_forwarded
  c = mine_subcache(cities, seed=5, epoch=3, subcache=0, config=CONFIG, embed=RecordingEmbed())
  assert set(zip(a.city, a.query)) != set(zip(c.city, c.query))
  d = mine_subcache(cities, seed=5, epoch=2, subcache=1, config=CONFIG, embed=RecordingEmbed())
  assert not set(zip(a.city, a.query)) & set(zip(d.city, d.query))

  # Save / load round trip through an atomic replace (no temporary file left behind).
  path = str(tmp_path / "cache.npz")
  a.save(path)
  a.save(path)  # overwriting is fine
  assert os.listdir(tmp_path) == ["cache.npz"]
  back = TupleCache.load(path)
  for f in ("city", "query", "positive", "negatives", "negative_city"):
    np.testing.assert_array_equal(getattr(back, f), getattr(a, f))
    assert getattr(back, f).dtype == np.int32
  assert (back.images_forwarded, back.num_queries) == (a.images_forwarded, a.num_queries)
  np.savez(tmp_path / "bad.npz", city=a.city)
  with pytest.raises(ValueError, match="missing key"):
    TupleCache.load(str(tmp_path / "bad.npz"))


def test_all_negatives_when_fewer_than_requested(cities):
  config = dataclasses.replace(CONFIG, num_negative_samples=10_000, keep_rule="violating")
  embed = RecordingEmbed()
  cache = mine_subcache(cities, seed=0, epoch=0, subcache=0, config=config, embed=embed)
  nonpano = sum(int((~c.database.pano).sum()) for c in cities)
  # Every non-panoramic database image is a candidate; those too close to all queries of the
  # sub-cache are not embedded (none here: the other city is always valid).
  assert len(embed.calls[2]) == nonpano
  assert len(cache) > 0


def test_embed_shape_is_checked(cities):
  with pytest.raises(ValueError, match=r"embed returned shape \(1, 8\) for \d+ query images"):
    mine_subcache(cities, seed=0, epoch=0, subcache=0, config=CONFIG,
                  embed=lambda paths: np.zeros((1, 8)))


def test_labels_must_reach_the_negative_distance(cities):
  with pytest.raises(ValueError, match="neg_dist_m = 120.0"):
    training_queries(cities, dataclasses.replace(CONFIG, neg_dist_m=120.0))


def test_candidates_valid_for_no_query_are_not_embedded(cities):
  city = cities[:1]
  config = dataclasses.replace(CONFIG, cache_queries=1, num_negative_samples=10_000)
  embed = RecordingEmbed()
  mine_subcache(city, seed=0, epoch=0, subcache=0, config=config, embed=embed)
  c = city[0]
  q = c.query.full_paths().index(embed.calls[0][0])
  near = [j for j in range(len(c.database)) if not c.database.pano[j]
          and utm_dist(c.query.utm[q], c.database.utm[j]) <= 25.0]
  assert near
  assert len(embed.calls[2]) == int((~c.database.pano).sum()) - len(near)
  assert not set(embed.calls[2]) & {c.database.full_paths()[j] for j in near}


def test_keep_rule_with_map_position_descriptors(cities):
  """Descriptors = map positions (metres): d(q, p) <= 10 < 25 < d(q, n), so the hardest negative
  violates the margin only when margin > d(q, n) - d(q, p)."""
  where = {}
  for c in cities:
    for t in (c.query, c.database):
      where.update(zip(t.full_paths(), t.utm - np.array([500_000.0, 5_000_000.0])))
  embed = lambda paths: np.stack([where[p] for p in paths])
  small = dataclasses.replace(CONFIG, keep_rule="violating", margin=15.0)
  assert len(mine_subcache(cities, seed=0, epoch=0, subcache=0, config=small, embed=embed)) == 0
  big = dataclasses.replace(CONFIG, keep_rule="violating", margin=1000.0)
  cache = mine_subcache(cities, seed=0, epoch=0, subcache=0, config=big, embed=embed)
  assert len(cache) == cache.num_queries > 0
  # With position descriptors the hardest negatives are the nearest valid ones on the map and
  # the positive is the nearest database image on the map.
  for t in range(len(cache)):
    c = cities[cache.city[t]]
    qpos = c.query.utm[cache.query[t]]
    d_p = utm_dist(qpos, c.database.utm[cache.positive[t]])
    d_n = [utm_dist(qpos, cities[nc].database.utm[n])
           for n, nc in zip(cache.negatives[t], cache.negative_city[t])]
    assert d_p <= 10.0 and 25.0 < d_n[0] <= d_n[1] <= d_n[2]

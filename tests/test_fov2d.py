"""FoV overlap (exact circular-sector intersection) and the per-city sparse label table.

Accuracy is checked against closed forms (to 1e-12), the golden values (to 1e-3 as required, and
in fact to 2e-5), an independent ray-by-ray semi-analytic integration (to 1e-5; its own
discretisation error is ~1e-6) and a brute-force dense grid (to 2e-3; its error is a fraction of
one grid cell along the boundary of the other sector, observed < 4e-4).
"""

import itertools
import json

import numpy as np
import pytest

from gcl_jax.data.msls import read_msls_city
from gcl_jax.types import ImageTable
from gcl_jax.labels import PairTable, city_pair_table, fov2d, fov_overlap

R = 50.0


# --------------------------------------------------------------------------- independent references


def sector_contains(x, y, cx, cy, heading_deg, r, fov_deg):
  """Brute-force membership of points (x, y) in a sector (compass heading)."""
  vx, vy = x - cx, y - cy
  h = np.deg2rad(heading_deg)
  norm = np.hypot(vx, vy)
  return (norm <= r) & (vx * np.sin(h) + vy * np.cos(h) >= norm * np.cos(np.deg2rad(fov_deg) / 2))


def grid_ratio(pa, ha, pb, hb, r, fov_deg, n=500):
  """Dense equal-area polar grid (n x n nodes) over sector a: fraction of nodes inside sector b."""
  alpha = np.deg2rad(fov_deg) / 2
  rho = r * np.sqrt((np.arange(n) + 0.5) / n)
  phi = np.deg2rad(ha) - alpha + 2 * alpha * (np.arange(n) + 0.5) / n
  rr, pp = np.meshgrid(rho, phi)
  return sector_contains(pa[0] + rr * np.sin(pp), pa[1] + rr * np.cos(pp), pb[0], pb[1], hb, r,
                         fov_deg).mean()


def ray_ratio(pa, ha, pb, hb, r, fov_deg, m=20000):
  """Midpoint rule over m rays from a's apex of the exact measure (rho^2 / 2) of ray ∩ B, clipped
  to [0, r]. B is (disk ∩ H1 ∩ H2) for fov <= 180 and (disk ∩ H1) ∪ (disk ∩ H2) above."""
  alpha = np.deg2rad(fov_deg) / 2
  phi = np.deg2rad(ha) - alpha + 2 * alpha * (np.arange(m) + 0.5) / m
  wx, wy = np.sin(phi), np.cos(phi)
  qx, qy = pb[0] - pa[0], pb[1] - pa[1]
  t = wx * qx + wy * qy
  disc = t * t - (qx * qx + qy * qy - r * r)
  sq = np.sqrt(np.maximum(disc, 0))
  disk = (np.where(disc >= 0, t - sq, np.inf), np.where(disc >= 0, t + sq, -np.inf))
  ux, uy = np.sin(np.deg2rad(hb)), np.cos(np.deg2rad(hb))
  planes = []
  for sign in (-1, 1):
    e = np.deg2rad(hb) + sign * alpha
    ex, ey = np.sin(e), np.cos(e)
    side = np.sign(ex * uy - ey * ux)  # the wedge side of the edge line
    cw = (ex * wy - ey * wx) * side
    cq = (ex * qy - ey * qx) * side
    safe = np.where(cw != 0, cw, 1)
    lo = np.where(cw > 0, cq / safe, np.where((cw == 0) & (cq > 0), np.inf, -np.inf))
    hi = np.where(cw < 0, cq / safe, np.inf)
    planes.append((lo, hi))

  def measure(*intervals):
    lo = np.clip(np.maximum.reduce([i[0] for i in intervals]), 0, r)
    hi = np.clip(np.minimum.reduce([i[1] for i in intervals]), 0, r)
    return np.maximum(hi * hi - lo * lo, 0) / 2

  if fov_deg <= 180:
    g = measure(disk, *planes)
  else:
    g = measure(disk, planes[0]) + measure(disk, planes[1]) - measure(disk, *planes)
  return g.mean() * 2 * alpha / (alpha * r * r)


def one(pa, ha, pb, hb, **kw):
  return float(fov_overlap(np.asarray(pa, float), ha, np.asarray(pb, float), hb, **kw))


# --------------------------------------------------------------------------------- fov_overlap


def test_golden_cases(data_dir):
  golden = json.loads((data_dir / "golden_fov_candidate.json").read_text())
  assert len(golden) == 13
  for name, case in golden.items():
    for a, b in (("1", "2"), ("2", "1")):  # both orders: ratio is symmetric.
      got = one(case["p" + a], case["ca" + a], case["p" + b], case["ca" + b], radius_m=50.0,
                fov_deg=90.0)
      assert abs(got - case["psi_r50_th90_dense"]) <= 1e-3, name
      assert abs(got - case["psi_r50_th90_dense"]) <= 2e-5, name  # golden values have 5 decimals.


@pytest.mark.parametrize("fov", [1.0, 45.0, 90.0, 120.0, 180.0, 270.0, 360.0])
def test_identical_pose_is_one(fov):
  rng = np.random.default_rng(0)
  pos = rng.uniform(-1e3, 1e3, (20, 2)) + [4e5, 5e6]
  head = rng.uniform(-720, 720, 20)
  np.testing.assert_allclose(fov_overlap(pos, head, pos, head, fov_deg=fov, radius_m=37.0), 1.0,
                             atol=1e-12)


def colocated_closed_form(delta, fov):
  """Overlap of two arcs of length fov centred delta apart, as a fraction of fov."""
  delta = abs((delta + 180.0) % 360.0 - 180.0)
  return (max(0.0, fov - delta) + max(0.0, fov - (360.0 - delta))) / fov


@pytest.mark.parametrize("fov", [30.0, 90.0, 150.0, 180.0, 200.0, 300.0, 360.0])
def test_colocated_heading_difference(fov):
  deltas = np.array([0, 1e-9, 5, 30, 45, 89.999, 90, 120, 179, 180, 181, 270, 359, 360, 725.5])
  got = fov_overlap(np.zeros(2), 17.0, np.zeros(2), 17.0 + deltas, fov_deg=fov)
  want = [colocated_closed_form(d, fov) for d in deltas]
  np.testing.assert_allclose(got, want, atol=1e-12)
  if fov <= 180:  # the formula of the brief: max(0, 1 - D / fov), D the wrapped difference.
    wrapped = np.abs((deltas + 180) % 360 - 180)
    np.testing.assert_allclose(got, np.maximum(0, 1 - wrapped / fov), atol=1e-12)


def test_heading_wraparound():
  assert one([0, 0], 350.0, [0, 0], 10.0) == pytest.approx(1 - 20 / 90, abs=1e-12)
  assert one([0, 0], 10.0, [0, 0], 340.0) == pytest.approx(2 / 3, abs=1e-12)
  assert one([3, 4], -10.0, [5, 9], 710.0) == pytest.approx(one([3, 4], 350.0, [5, 9], 350.0))


@pytest.mark.parametrize("fov", [10.0, 90.0, 179.0, 180.0])
def test_back_to_back_is_zero(fov):
  for gap in (0.0, 1e-9, 5.0, 30.0, 99.0):
    assert one([0, 0], 180.0, [0, gap], 0.0, fov_deg=fov) == 0.0
    assert one([7, 0], 90.0 + 180.0, [7 + gap, 0], 90.0, fov_deg=fov) == 0.0


def test_far_apart_is_exactly_zero():
  rng = np.random.default_rng(1)
  n = 2000
  dist = rng.uniform(100.0 + 1e-9, 400.0, n)
  ang = rng.uniform(0, 2 * np.pi, n)
  pb = np.stack([dist * np.sin(ang), dist * np.cos(ang)], 1)
  for fov in (90.0, 360.0):
    out = fov_overlap(np.zeros(2), rng.uniform(0, 360, n), pb, rng.uniform(0, 360, n), fov_deg=fov)
    assert np.all(out == 0.0)
  # Two full disks (fov 360) facing each other at exactly 2r touch in a point: 0.
  assert one([0, 0], 0.0, [0, 100.0], 180.0, fov_deg=360.0) == 0.0


def test_cutoff_factor():
  # Same heading, 60 m lateral: overlap > 0 exactly, but 0 with the third-party cut-off at r.
  exact = one([0, 0], 0.0, [60.0, 0], 0.0, fov_deg=180.0)
  assert exact > 0.05
  assert one([0, 0], 0.0, [60.0, 0], 0.0, fov_deg=180.0, cutoff_factor=1.0) == 0.0
  assert one([0, 0], 0.0, [60.0, 0], 0.0, fov_deg=180.0, cutoff_factor=3.0) == exact
  # Below the cut-off the value is unchanged.
  assert one([0, 0], 0.0, [20.0, 0], 0.0, cutoff_factor=1.0) == one([0, 0], 0.0, [20.0, 0], 0.0)


def test_full_disk_is_the_lens():
  for d in (0.0, 1.0, 33.0, 70.0, 99.9):
    lens = 2 * R * R * np.arccos(d / (2 * R)) - d / 2 * np.sqrt(4 * R * R - d * d)
    got = one([0, 0], 12.0, [d, 0], 250.0, fov_deg=360.0)
    assert got == pytest.approx(lens / (np.pi * R * R), abs=1e-12)


def test_ratio_symmetry_and_iou():
  rng = np.random.default_rng(2)
  n = 5000
  pa = rng.uniform(0, 150, (n, 2))
  pb = rng.uniform(0, 150, (n, 2))
  ha, hb = rng.uniform(0, 360, n), rng.uniform(0, 360, n)
  for fov in (60.0, 90.0, 240.0):
    ab = fov_overlap(pa, ha, pb, hb, fov_deg=fov)
    ba = fov_overlap(pb, hb, pa, ha, fov_deg=fov)
    np.testing.assert_allclose(ab, ba, atol=1e-12)
    assert ab.min() >= 0.0 and ab.max() <= 1.0 and np.mean(ab > 0) > 0.05
    iou = fov_overlap(pa, ha, pb, hb, fov_deg=fov, normalization="iou")
    np.testing.assert_allclose(iou, ab / (2 - ab), atol=1e-15)


def test_scale_and_translation_invariance():
  rng = np.random.default_rng(3)
  n = 500
  pa, pb = rng.uniform(0, 80, (n, 2)), rng.uniform(0, 80, (n, 2))
  ha, hb = rng.uniform(0, 360, n), rng.uniform(0, 360, n)
  base = fov_overlap(pa, ha, pb, hb)
  np.testing.assert_allclose(fov_overlap(pa * 3, ha, pb * 3, hb, radius_m=150.0), base, atol=1e-12)
  shift = np.array([712345.0, 5812345.0])  # realistic UTM magnitudes
  np.testing.assert_allclose(fov_overlap(pa + shift, ha, pb + shift, hb), base, atol=1e-9)


def test_against_ray_integration_random():
  """Independent semi-analytic reference (exact per ray, midpoint rule over 20000 rays)."""
  rng = np.random.default_rng(4)
  fovs = [10.0, 60.0, 90.0, 120.0, 179.0, 181.0, 250.0, 359.0]
  for i in range(120):
    fov = fovs[i % len(fovs)] if i % 3 else rng.uniform(1.0, 359.0)
    r = rng.uniform(5, 80)
    pa = rng.uniform(-50, 50, 2)
    pb = pa + rng.uniform(-2.05 * r, 2.05 * r, 2)
    ha, hb = rng.uniform(-400, 400, 2)
    got = one(pa, ha, pb, hb, radius_m=r, fov_deg=fov)
    assert abs(got - ray_ratio(pa, ha, pb, hb, r, fov)) < 1e-5, (fov, r, pa, ha, pb, hb)


def test_against_dense_grid_random():
  """Brute force: fraction of a dense 500 x 500 equal-area grid over sector a inside sector b."""
  rng = np.random.default_rng(5)
  for i in range(30):
    fov = [45.0, 90.0, 135.0, 200.0, 300.0, 360.0][i % 6]
    pa = rng.uniform(-20, 20, 2)
    pb = pa + rng.uniform(-80, 80, 2)
    ha, hb = rng.uniform(0, 360, 2)
    got = one(pa, ha, pb, hb, fov_deg=fov)
    assert abs(got - grid_ratio(pa, ha, pb, hb, R, fov)) < 2e-3, (fov, pa, ha, pb, hb)


def test_degenerate_configurations_against_grid():
  """Coincident apexes, edges, arcs and tangencies (where naive clipping breaks) vs the grid."""
  cases = 0
  for fov in (45.0, 90.0, 180.0, 270.0):
    a = fov / 2
    offsets = [(0.0, 0.0), (1e-12, 0.0), (0.0, -1e-9)]
    for dist, ang in itertools.product((10.0, 50.0, 100.0), (0.0, a, -a, 180.0 + a)):
      offsets.append((dist * np.sin(np.deg2rad(ang)), dist * np.cos(np.deg2rad(ang))))
    for (ox, oy), dh in itertools.product(offsets, (0.0, 1e-12, fov, -fov, 180.0)):
      got = one([0, 0], 0.0, [ox, oy], dh, fov_deg=fov)
      rev = one([ox, oy], dh, [0, 0], 0.0, fov_deg=fov)
      want = grid_ratio(np.zeros(2), 0.0, np.array([ox, oy]), dh, R, fov, n=300)
      assert abs(got - want) < 2e-3 and abs(rev - want) < 2e-3, (fov, ox, oy, dh, got, rev, want)
      cases += 1
  assert cases == 4 * 15 * 5


def test_continuous_through_degenerate_configurations():
  """Tiny perturbations of degenerate poses change the value by a tiny amount (no jumps)."""
  rng = np.random.default_rng(6)
  for fov in (30.0, 90.0, 180.0, 270.0, 360.0):
    for _ in range(40):
      ang = rng.choice([0.0, fov / 2, -fov / 2, 180.0, rng.uniform(0, 360)])
      dist = rng.choice([0.0, 10.0, 50.0, 100.0])
      dh = rng.choice([0.0, fov, -fov, 180.0, fov / 2])
      base = dist * np.array([np.sin(np.deg2rad(ang)), np.cos(np.deg2rad(ang))])
      k = np.linspace(-1, 1, 21)[:, None]
      direction = rng.normal(size=3)
      pb = base + 1e-7 * R * k * direction[:2]
      hb = dh + 1e-7 * 57.3 * k[:, 0] * direction[2]
      v = fov_overlap(np.zeros(2), 0.0, pb, hb, fov_deg=fov)
      assert np.abs(np.diff(v)).max() < 1e-6, (fov, ang, dist, dh, v)


def test_broadcasting_shapes_and_dtype():
  pa = np.zeros((3, 1, 2))
  pb = np.stack([np.linspace(0, 120, 4), np.zeros(4)], -1)  # (4, 2)
  out = fov_overlap(pa, np.array([0.0, 90.0, 180.0])[:, None], pb, 90.0)
  assert out.shape == (3, 4) and out.dtype == np.float64
  assert out[1, 0] == pytest.approx(1.0)  # co-located, same heading (90).
  assert out[:, 3].tolist() == [0.0, 0.0, 0.0]  # 120 m > 2r.
  assert fov_overlap(np.zeros(2), 0.0, np.zeros(2), 0.0).shape == ()
  assert fov_overlap(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), np.zeros(0)).shape == (0,)
  # Integer and list inputs are accepted.
  assert float(fov_overlap([0, 0], 0, [0, 0], 45)) == pytest.approx(0.5)


def test_non_finite_inputs():
  out = fov_overlap(np.zeros((3, 2)), np.array([np.nan, 0.0, np.nan]),
                    np.array([[0.0, 5.0], [0.0, 5.0], [0.0, 500.0]]), 0.0)
  assert np.isnan(out[0]) and out[1] > 0 and out[2] == 0.0  # beyond the cut-off it is still 0.


@pytest.mark.parametrize("kwargs, match", [
    ({"fov_deg": 0.0}, "fov_deg"), ({"fov_deg": 360.5}, "fov_deg"), ({"fov_deg": -90.0}, "fov_deg"),
    ({"fov_deg": float("nan")}, "fov_deg"), ({"radius_m": 0.0}, "radius_m"),
    ({"radius_m": float("inf")}, "radius_m"), ({"normalization": "dice"}, "normalization"),
    ({"cutoff_factor": 0.0}, "cutoff_factor"),
])
def test_invalid_parameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    fov_overlap(np.zeros(2), 0.0, np.zeros(2), 0.0, **kwargs)


def test_invalid_position_shape():
  with pytest.raises(ValueError, match="pos_b"):
    fov_overlap(np.zeros(2), 0.0, np.zeros(3), 0.0)


def test_chunking_does_not_change_values(monkeypatch):
  rng = np.random.default_rng(7)
  n = 3000
  args = (rng.uniform(0, 100, (n, 2)), rng.uniform(0, 360, n), rng.uniform(0, 100, (n, 2)),
          rng.uniform(0, 360, n))
  base = fov_overlap(*args)
  monkeypatch.setattr(fov2d, "_CHUNK", 97)
  np.testing.assert_array_equal(fov_overlap(*args), base)


# ----------------------------------------------------------------------------- city_pair_table


def image_table(utm, heading, pano=None, name="t"):
  utm = np.asarray(utm, np.float64).reshape(-1, 2)
  n = len(utm)
  pano = np.zeros(n, bool) if pano is None else np.asarray(pano, bool)
  heading = np.where(pano, np.nan, np.asarray(heading, np.float64))
  return ImageTable(root="/r", name=name, paths=np.array([f"{name}/{i}.jpg" for i in range(n)]),
                    keys=np.array([f"{name}{i}" for i in range(n)]), utm=utm, heading=heading,
                    pano=pano, night=np.zeros(n, bool), in_all=np.ones(n, bool))


def brute_force(query, database, pos_dist_m=10.0, neg_dist_m=25.0, **fov_params):
  """Dense (psi, sim, dist) over all pairs, straight from fov_overlap."""
  dq = database.utm[None, :, :] - query.utm[:, None, :]
  dist = np.hypot(dq[..., 0], dq[..., 1])
  psi = fov_overlap(query.utm[:, None], query.heading[:, None], database.utm[None],
                    database.heading[None], **fov_params)
  psi[query.pano[:, None] | database.pano[None, :]] = 0.0
  sim = np.where(dist <= pos_dist_m, 1, np.where(dist > neg_dist_m, 0, -1))
  return psi, sim, dist


def check_layout(table: PairTable):
  assert table.indptr.dtype == np.int64 and table.indptr[0] == 0
  assert np.all(np.diff(table.indptr) >= 0)
  assert table.db_idx.dtype == np.int32 and table.psi.dtype == np.float32
  assert table.sim.dtype == np.int8 and table.dist.dtype == np.float32
  for q in range(table.num_queries):
    assert np.all(np.diff(table.row(q)[0]) > 0)  # strictly ascending database indices


def check_against_brute_force(query, database, table, **params):
  psi, sim, dist = brute_force(query, database, **params)
  search = table.params["search_radius_m"]
  listed = np.zeros(psi.shape, bool)
  listed[table.q_idx, table.db_idx] = True
  np.testing.assert_array_equal(listed, dist <= search)
  np.testing.assert_array_equal(table.dense("psi"), np.where(listed, psi, 0).astype(np.float32))
  assert np.all(psi[~listed] == 0)  # nothing with a non-zero label is left out ...
  assert np.all(sim[~listed] == 0)
  q, d = table.q_idx, table.db_idx
  np.testing.assert_array_equal(table.sim, sim[q, d])
  np.testing.assert_allclose(table.dist, dist[q, d], rtol=1e-6)


def test_city_pair_table_thresholds_and_panoramas():
  # Exact float distances: (6, 8) -> 10, (15, 20) -> 25, (0, 100) -> 100 (= the search radius).
  query = image_table([[0, 0], [1000, 0]], [0.0, 0.0], pano=[False, True], name="q")
  db_utm = [[6, 8], [15, 20], [15, 20.001], [0, 100], [0, 100.001], [0, 9.999], [1000, 3], [0, 0]]
  database = image_table(db_utm, [0.0] * 7 + [0.0], pano=[False] * 7 + [True], name="d")
  table = city_pair_table(query, database)
  check_layout(table)
  assert table.params == {"radius_m": 50.0, "fov_deg": 90.0, "normalization": "ratio",
                          "cutoff_factor": 2.0, "pos_dist_m": 10.0, "neg_dist_m": 25.0,
                          "search_radius_m": 100.0, "method": fov2d.METHOD}
  db, psi, sim = table.row(0)
  assert db.tolist() == [0, 1, 2, 3, 5, 7]  # 4 is 100.001 m away: not listed.
  assert dict(zip(db.tolist(), sim.tolist())) == {0: 1, 1: -1, 2: 0, 3: 0, 5: 1, 7: 1}
  assert psi[db.tolist().index(7)] == 0.0  # database panorama, co-located
  assert psi[db.tolist().index(5)] == pytest.approx(one([0, 0], 0, [0, 9.999], 0), abs=1e-7)
  assert psi[db.tolist().index(3)] == 0.0  # 2r apart: the sectors touch in a point.
  db, psi, sim = table.row(1)  # query panorama: positive by distance, psi 0.
  assert db.tolist() == [6] and sim.tolist() == [1] and psi.tolist() == [0.0]
  check_against_brute_force(query, database, table)


def test_city_pair_table_matches_dense_brute_force(monkeypatch):
  rng = np.random.default_rng(8)
  nq, ndb = 70, 90
  query = image_table(rng.uniform(0, 250, (nq, 2)) + [3e5, 4e6], rng.uniform(0, 360, nq),
                      pano=rng.random(nq) < 0.1, name="q")
  database = image_table(rng.uniform(0, 250, (ndb, 2)) + [3e5, 4e6], rng.uniform(0, 360, ndb),
                         pano=rng.random(ndb) < 0.1, name="d")
  for params in ({}, {"radius_m": 30.0, "fov_deg": 200.0, "normalization": "iou"},
                 {"cutoff_factor": 1.0, "pos_dist_m": 5.0, "neg_dist_m": 80.0}):
    table = city_pair_table(query, database, **params)
    check_layout(table)
    assert table.num_pairs > 100 and np.any(table.psi > 0)
    check_against_brute_force(query, database, table, **params)
  # Query blocks: the same table for any block size.
  base = city_pair_table(query, database)
  monkeypatch.setattr(fov2d, "_QUERY_BLOCK", 7)
  small = city_pair_table(query, database)
  for f in ("indptr", "db_idx", "psi", "sim", "dist"):
    np.testing.assert_array_equal(getattr(small, f), getattr(base, f))


def test_city_pair_table_search_radius():
  query = image_table([[0, 0]], [0.0])
  database = image_table([[0, 30], [0, 60], [0, 99]], [0.0, 0.0, 0.0])
  # cutoff 1 x 50 m but negatives at 40 m: listed within max(50, 40) = 50 m.
  table = city_pair_table(query, database, cutoff_factor=1.0, neg_dist_m=40.0)
  assert table.params["search_radius_m"] == 50.0 and table.db_idx.tolist() == [0]
  # negatives beyond 2r: listed within neg_dist_m, psi 0 beyond 2r.
  table = city_pair_table(query, database, radius_m=20.0, neg_dist_m=70.0)
  assert table.db_idx.tolist() == [0, 1] and table.psi[1] == 0.0
  # cutoff_factor above 2 adds nothing: beyond 2r the overlap is exactly 0.
  assert city_pair_table(query, database, cutoff_factor=5.0).params["search_radius_m"] == 100.0


def test_city_pair_table_empty():
  query = image_table([[0, 0], [1, 1]], [0.0, 0.0])
  far = image_table([[5000, 5000]], [0.0])
  table = city_pair_table(query, far)
  assert table.num_pairs == 0 and table.indptr.tolist() == [0, 0, 0]
  assert table.dense().shape == (2, 1)
  none = image_table(np.zeros((0, 2)), np.zeros(0))
  table = city_pair_table(none, far)
  assert table.num_queries == 0 and table.num_pairs == 0 and table.indptr.tolist() == [0]
  assert city_pair_table(query, none).indptr.tolist() == [0, 0, 0]


def test_city_pair_table_invalid_inputs():
  t = image_table([[0, 0]], [0.0])
  with pytest.raises(ValueError, match="pos_dist_m"):
    city_pair_table(t, t, pos_dist_m=30.0, neg_dist_m=25.0)
  with pytest.raises(ValueError, match="neg_dist_m"):
    city_pair_table(t, t, neg_dist_m=float("nan"))
  with pytest.raises(ValueError, match="fov_deg"):
    city_pair_table(t, t, fov_deg=400.0)
  bad = image_table([[0, 0], [np.nan, 1]], [0.0, 0.0], name="bad")
  with pytest.raises(ValueError, match="row 1"):
    city_pair_table(bad, t)


def test_city_pair_table_toy_msls(data_dir):
  root = data_dir / "toy_msls"
  query, database = read_msls_city(str(root), "cph")
  table = city_pair_table(query, database)
  check_layout(table)
  check_against_brute_force(query, database, table)
  rows = {q: dict(zip(table.row(q)[0].tolist(), zip(table.row(q)[1].tolist(),
                                                     table.row(q)[2].tolist())))
          for q in range(table.num_queries)}
  # q0 at (0, 0): d0 10 m (positive), d1 25 m (ambiguous), d2 25.01 m (negative), d4 pano 1 m.
  assert sorted(rows[0]) == [0, 1, 2, 4]
  assert [rows[0][d][1] for d in (0, 1, 2, 4)] == [1, -1, 0, 1]
  assert rows[0][4][0] == 0.0
  assert rows[2] and all(p == 0.0 for p, _ in rows[2].values())  # q2 is a panorama
  assert rows[3] == {}  # q3 is 700 m away from everything
  # q4 (0, 0) heading 0 and d0 (10, 0) heading 0: 10 m lateral, golden 0.75851.
  assert rows[4][0][0] == pytest.approx(0.75851, abs=1e-5)

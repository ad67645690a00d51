"""Graded 2-D field-of-view (FoV) overlap labels for MSLS-style (position, compass) metadata.

Each camera is modelled by a circular sector (GCL_REFERENCE.md section 2.3): apex at the camera
position c = (east, north) in metres, axis along the compass heading h (degrees clockwise from
north, i.e. direction (sin h, cos h) in (east, north)), half-angle fov/2 and radius r:

    S(c, h) = {p : |p - c| <= r and angle(p - c, (sin h, cos h)) <= fov / 2},
    |S| = fov_rad * r^2 / 2.

The graded label of a pair is psi = |S_a ∩ S_b| / |S_a| ("ratio", symmetric because both sectors
have the same area) or |S_a ∩ S_b| / |S_a ∪ S_b| = psi / (2 - psi) ("iou").

Method (exact, no polygon or quadrature approximation). The area of the intersection is the
Green's-theorem line integral 1/2 ∮ (x dy - y dx) along the boundary of S_a ∩ S_b, which is made of
the pieces of ∂S_a inside S_b and the pieces of ∂S_b inside S_a. Working in the frame of camera a
(apex at the origin, axis along +x, radius 1):

* the two straight edges of S_a pass through the origin, so they contribute exactly 0 (this also
  makes every coincidence of straight edges harmless: a B edge on an A edge line contributes 0);
* every other boundary piece (the arc of S_a, the arc of S_b, the two edges of S_b) is split at all
  its intersections with the three boundary curves (two lines and one circle) of the other
  sector; each sub-piece lies entirely inside or outside the other sector, which is decided at
  its midpoint (on an arc, each constraint of the other sector is itself an angular interval
  |angle - centre| <= width, so no trigonometry is needed for the test), and its integral has a
  closed form: arc of the unit circle about the origin, dphi / 2; arc of the unit circle about p,
  (dpsi + |p| d sin(psi - arg p)) / 2; segment p + s e, cross(p, e) ds / 2;
* the only remaining coincidence, two arcs on the same circle (co-located cameras), is resolved
  consistently: the A arc counts the part of the shared circle facing p (closed test) and the B
  arc the rest (open test), the d -> 0 limit, so that the shared boundary is counted once.

The result is exact up to floating-point rounding for any fov in (0, 360] degrees, including
non-convex sectors (fov > 180) and the full disk (fov = 360), and it is continuous through the
degenerate configurations (co-located cameras, collinear edges, tangent circles). The tests compare
it with closed forms (to 1e-12), the golden values, an independent ray-by-ray semi-analytic
integration (to 1e-5) and a dense grid (to 2e-3), see tests/test_fov2d.py. Throughput is about
1-2 million pairs per second on one CPU core (pairs are processed in vectorised blocks).
"""

from __future__ import annotations

import types

import numpy as np
from scipy import spatial

from gcl_jax.types import ImageTable
from gcl_jax.types import PairTable, SIM_AMBIGUOUS, SIM_NEGATIVE, SIM_POSITIVE

METHOD = "exact-sector-green/1"  # recorded in PairTable.params; bump when the values change.

# The one place that holds the default labelling parameters: the keyword defaults of
# `fov_overlap`, `pair_table_params` and `city_pair_table` below, `label_dataset` and the
# command lines (python -m gcl_jax.labels) all read them from here.
DEFAULT_PARAMS = types.MappingProxyType({
    "radius_m": 50.0,  # sector radius r, metres.
    "fov_deg": 90.0,  # full sector angle, degrees.
    "normalization": "ratio",  # |A ∩ B| / |A|; or "iou".
    "cutoff_factor": 2.0,  # 2 = the exact geometric bound (no cut-off).
    "pos_dist_m": 10.0,  # binary label: positive within this distance.
    "neg_dist_m": 25.0,  # binary label: negative beyond this distance.
})

_NORMALIZATIONS = ("ratio", "iou")
_TWO_PI = 2.0 * np.pi
_QUERY_BLOCK = 2048  # queries per radius-search block in city_pair_table.
_CHUNK = 8192  # pairs per vectorised block: bounds the (chunk, 8) temporaries (~0.5 MB each).


def _check_params(radius_m: float, fov_deg: float, normalization: str,
                  cutoff_factor: float) -> None:
  """Raises ValueError naming the first invalid FoV parameter."""
  if not (np.isfinite(radius_m) and radius_m > 0):
    raise ValueError(f"radius_m must be a finite positive number of metres, got {radius_m!r}")
  if not (np.isfinite(fov_deg) and 0.0 < fov_deg <= 360.0):
    raise ValueError(f"fov_deg must be in (0, 360] degrees, got {fov_deg!r}")
  if normalization not in _NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
  if not (cutoff_factor > 0):  # inf is allowed (no cut-off beyond the exact 2r bound).
    raise ValueError(f"cutoff_factor must be positive, got {cutoff_factor!r}")


def _wrap(x: np.ndarray) -> np.ndarray:
  """Wraps angles (radians) into [-pi, pi] (cheaper than a modulo)."""
  return x - _TWO_PI * np.rint(x * (1.0 / _TWO_PI))


def _sorted_with_ends(bp: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """(n, k) break points clipped to [lo, hi], sorted, with lo and hi added: (n, k + 2)."""
  out = np.empty((bp.shape[0], bp.shape[1] + 2))
  out[:, 0] = lo
  out[:, -1] = hi
  out[:, 1:-1] = np.sort(np.clip(bp, lo, hi), axis=1)
  return out


def _within(angle: np.ndarray, centre: np.ndarray, half_width: np.ndarray) -> np.ndarray:
  """True where `angle` is within `half_width` (in [0, pi]) of `centre` on the circle."""
  return np.abs(_wrap(angle - centre[:, None])) <= half_width[:, None]


def _intersection_area_unit(px: np.ndarray, py: np.ndarray, beta: np.ndarray, cb: np.ndarray,
                            sb: np.ndarray, alpha: float) -> np.ndarray:
  """Area of S_a ∩ S_b for unit radius, S_a at the origin with axis +x.

  Args:
    px, py: (n,) position of camera b in camera a's frame (units of the radius).
    beta: (n,) axis angle of camera b in that frame (radians, counter-clockwise from +x).
    cb, sb: (n,) cos(beta) and sin(beta).
    alpha: half-angle of both sectors in radians, in (0, pi].

  Returns:
    (n,) intersection area (the sector area is alpha).
  """
  convex = alpha <= 0.5 * np.pi  # wedge = H1 ∩ H2 when convex, H1 ∪ H2 otherwise.
  cos_a, sin_a = np.cos(alpha), np.sin(alpha)
  d2 = px * px + py * py
  ang_p = np.arctan2(py, px)
  # The A circle meets the B circle at ang_p +- hl (seen from A's centre); the B circle meets the
  # A circle at ang_p + pi +- hl (seen from B's centre). d = 0 gives hl = pi / 2: the A arc then
  # counts the half circle facing +x and the B arc the other half, so the shared circle is counted
  # exactly once (the limit of d -> 0+).
  hl = np.arccos(np.minimum(0.5 * np.sqrt(d2), 1.0))
  # B's edge directions e1 = beta - alpha (traversed outwards) and e2 = beta + alpha (traversed
  # back to the apex): the counter-clockwise orientation of the boundary.
  ce1, se1 = cb * cos_a + sb * sin_a, sb * cos_a - cb * sin_a
  ce2, se2 = cb * cos_a - sb * sin_a, sb * cos_a + cb * sin_a

  # --- Arc of A (phi in [-alpha, alpha]): contributes dphi where inside B. ----------------------
  # B's half-planes: H1 = left of e1 = {n1.(v - p) >= 0}, H2 = right of e2 = {n2.(v - p) <= 0},
  # n_i = e_i rotated by +90 degrees, at angle nu_i. On the unit circle n.m = cos(phi - nu), so
  # H1 is |phi - nu1| <= arccos(n1.p) and H2 is |phi - nu2| >= arccos(n2.p).
  w1 = np.arccos(np.clip(py * ce1 - px * se1, -1.0, 1.0))
  w2 = np.arccos(np.clip(py * ce2 - px * se2, -1.0, 1.0))
  nu1 = beta - alpha + 0.5 * np.pi
  nu2 = beta + alpha + 0.5 * np.pi
  bp = np.stack([ang_p + hl, ang_p - hl, nu1 + w1, nu1 - w1, nu2 + w2, nu2 - w2], axis=1)
  t = _sorted_with_ends(_wrap(bp), -alpha, alpha)
  mid = 0.5 * (t[:, 1:] + t[:, :-1])
  h1 = _within(mid, nu1, w1)
  h2 = ~_within(mid, nu2, w2)
  inside = _within(mid, ang_p, hl) & ((h1 & h2) if convex else (h1 | h2))
  twice_area = np.sum((t[:, 1:] - t[:, :-1]) * inside, axis=1)

  # --- Arc of B (psi = beta + t, t in [-alpha, alpha]): 1 + p_x cos psi + p_y sin psi. ----------
  # A's half-planes: H1 = left of (cos a, -sin a), normal at angle m1 = pi/2 - alpha; H2 = right
  # of (cos a, sin a), normal at m2 = pi/2 + alpha. For v = p + w, n.v = cos(psi - m) + n.p.
  v1 = np.arccos(np.clip(-(px * sin_a + py * cos_a), -1.0, 1.0))
  v2 = np.arccos(np.clip(px * sin_a - py * cos_a, -1.0, 1.0))
  m1 = np.full_like(px, 0.5 * np.pi - alpha)
  m2 = np.full_like(px, 0.5 * np.pi + alpha)
  opp = ang_p + np.pi
  bp = np.stack([opp + hl, opp - hl, m1 + v1, m1 - v1, m2 + v2, m2 - v2], axis=1)
  t = _sorted_with_ends(_wrap(bp - beta[:, None]), -alpha, alpha)
  mid = 0.5 * (t[:, 1:] + t[:, :-1]) + beta[:, None]
  h1 = _within(mid, m1, v1)
  h2 = ~_within(mid, m2, v2)
  # Open A disk here (strict <) versus the closed B disk above: see the comment on hl.
  inside = (np.abs(_wrap(mid - opp[:, None])) < hl[:, None]) & ((h1 & h2) if convex else (h1 | h2))
  # p_x sin psi - p_y cos psi = d sin(psi - ang_p).
  f = t + np.sqrt(d2)[:, None] * np.sin(t + (beta - ang_p)[:, None])
  twice_area += np.sum((f[:, 1:] - f[:, :-1]) * inside, axis=1)

  # --- Straight edges of B (p + s e, s in [0, 1]): contribute cross(p, e) ds. -------------------
  cos2 = cos_a * cos_a
  for ex, ey, sign in ((ce1, se1, 1.0), (ce2, se2, -1.0)):
    pe = px * ex + py * ey
    root = np.sqrt(np.maximum(pe * pe - d2 + 1.0, 0.0))  # A's circle.
    bps = [-pe - root, -pe + root]
    for nx, ny in ((sin_a, cos_a), (-sin_a, cos_a)):  # A's edge lines, through the origin.
      ne = nx * ex + ny * ey
      ok = ne != 0.0
      bps.append(np.where(ok, -(nx * px + ny * py) / np.where(ok, ne, 1.0), 0.0))
    s = _sorted_with_ends(np.stack(bps, axis=1), 0.0, 1.0)
    mid = 0.5 * (s[:, 1:] + s[:, :-1])
    vx = px[:, None] + mid * ex[:, None]
    vy = py[:, None] + mid * ey[:, None]
    r2 = vx * vx + vy * vy
    # angle(v, +x) <= alpha  <=>  v_x >= |v| cos(alpha), written without a square root.
    if convex:
      in_wedge = (vx >= 0.0) & (vx * vx >= r2 * cos2)
    else:
      in_wedge = (vx >= 0.0) | (vx * vx <= r2 * cos2)
    inside = (r2 < 1.0) & in_wedge
    length = np.sum((s[:, 1:] - s[:, :-1]) * inside, axis=1)
    twice_area += sign * (px * ey - py * ex) * length

  return 0.5 * twice_area


def fov_overlap(pos_a: np.ndarray, heading_a: np.ndarray, pos_b: np.ndarray, heading_b: np.ndarray,
                *, radius_m: float = DEFAULT_PARAMS["radius_m"],
                fov_deg: float = DEFAULT_PARAMS["fov_deg"],
                normalization: str = DEFAULT_PARAMS["normalization"],
                cutoff_factor: float = DEFAULT_PARAMS["cutoff_factor"]) -> np.ndarray:
  """Graded FoV overlap of camera pairs (exact circular-sector intersection).

  Args:
    pos_a: (..., 2) UTM (east, north) of camera a, metres.
    heading_a: (...) compass heading of camera a, degrees clockwise from north.
    pos_b, heading_b: the same for camera b. All four inputs broadcast against each other.
    radius_m: sector radius r in metres.
    fov_deg: sector angle (full field of view) in degrees, in (0, 360].
    normalization: "ratio" = |A ∩ B| / |A| (symmetric, as both sectors have the same area) or
      "iou" = |A ∩ B| / |A ∪ B|.
    cutoff_factor: pairs whose centres are more than cutoff_factor * radius_m apart get exactly 0.
      2 is the exact geometric bound (no effect on the value); 1 reproduces a known third-party
      variant that zeroes pairs between r and 2r apart.

  Returns:
    float64 array of the broadcast shape with values in [0, 1]; NaN where an input is not finite
    (e.g. the NaN heading of a panorama) and the pair is within the cut-off distance.

  Raises:
    ValueError: on an invalid parameter or position arrays whose last axis is not 2.
  """
  _check_params(radius_m, fov_deg, normalization, cutoff_factor)
  pos_a = np.asarray(pos_a, np.float64)
  pos_b = np.asarray(pos_b, np.float64)
  for name, pos in (("pos_a", pos_a), ("pos_b", pos_b)):
    if pos.ndim < 1 or pos.shape[-1] != 2:
      raise ValueError(f"{name} must have shape (..., 2) (east, north), got {pos.shape}")
  heading_a = np.asarray(heading_a, np.float64)
  heading_b = np.asarray(heading_b, np.float64)
  de = pos_b[..., 0] - pos_a[..., 0]
  dn = pos_b[..., 1] - pos_a[..., 1]
  de, dn, ha, hb = np.broadcast_arrays(de, dn, heading_a, heading_b)
  shape = de.shape
  de, dn, ha, hb = (x.reshape(-1) for x in (de, dn, ha, hb))
  out = np.zeros(de.shape, np.float64)

  r = float(radius_m)
  reach = min(float(cutoff_factor), 2.0) * r  # beyond 2r the sectors cannot overlap.
  dist = np.hypot(de, dn)
  finite = np.isfinite(ha) & np.isfinite(hb) & np.isfinite(dist)
  out[~finite & ~(dist > cutoff_factor * r)] = np.nan
  active = np.flatnonzero(finite & (dist <= reach))
  alpha = np.deg2rad(float(fov_deg)) / 2.0
  # Cheap exact rejection: for fov < 120 degrees a sector lies inside the disk of radius
  # m = r / (2 cos(fov / 2)) < r centred m along its axis (the circumcircle of the apex and the two
  # arc ends); pairs whose such disks are disjoint have psi = 0.
  m = 0.5 / np.cos(alpha) if alpha < np.pi / 3 else None
  for start in range(0, len(active), _CHUNK):
    idx = active[start:start + _CHUNK]
    ra, rb = np.deg2rad(ha[idx]), np.deg2rad(hb[idx])
    sa, ca, sb, cb = np.sin(ra), np.cos(ra), np.sin(rb), np.cos(rb)
    ex, ny = de[idx] / r, dn[idx] / r  # in units of the radius.
    if m is not None:
      gx = ex + m * (sb - sa)
      gy = ny + m * (cb - ca)
      keep = np.flatnonzero(gx * gx + gy * gy <= 4.0 * m * m)
      idx, ra, rb, sa, ca, sb, cb, ex, ny = (x[keep] for x in (idx, ra, rb, sa, ca, sb, cb, ex, ny))
    # Camera a's frame: x along its axis (sin h, cos h), y to its left (-cos h, sin h). Compass
    # angles turn clockwise and the frame counter-clockwise, so b's axis is at ha - hb there.
    px = ex * sa + ny * ca
    py = ny * sa - ex * ca
    area = _intersection_area_unit(px, py, _wrap(ra - rb), ca * cb + sa * sb, sa * cb - ca * sb,
                                   alpha)
    out[idx] = np.clip(area / alpha, 0.0, 1.0)
  if normalization == "iou":
    out = out / (2.0 - out)
  return out.reshape(shape)


def _check_positions(table: ImageTable, what: str) -> None:
  """Raises ValueError naming the first image of `table` whose UTM position is not finite."""
  bad = np.flatnonzero(~np.all(np.isfinite(table.utm), axis=1))
  if len(bad):
    i = int(bad[0])
    raise ValueError(f"{what} table {table.name!r}: row {i} (key {table.keys[i]!r}) has a "
                     f"non-finite UTM position {table.utm[i].tolist()} ({len(bad)} such rows)")


def pair_table_params(*, radius_m: float = DEFAULT_PARAMS["radius_m"],
                      fov_deg: float = DEFAULT_PARAMS["fov_deg"],
                      normalization: str = DEFAULT_PARAMS["normalization"],
                      cutoff_factor: float = DEFAULT_PARAMS["cutoff_factor"],
                      pos_dist_m: float = DEFAULT_PARAMS["pos_dist_m"],
                      neg_dist_m: float = DEFAULT_PARAMS["neg_dist_m"]) -> dict:
  """Validated `PairTable.params` that `city_pair_table` records for these arguments.

  Besides the arguments (as plain floats / str) it holds `search_radius_m`
  = max(min(cutoff_factor, 2) * radius_m, neg_dist_m) and `method` (the labelling code version).

  Raises:
    ValueError: naming the first invalid parameter.
  """
  _check_params(radius_m, fov_deg, normalization, cutoff_factor)
  for name, v in (("pos_dist_m", pos_dist_m), ("neg_dist_m", neg_dist_m)):
    if not (np.isfinite(v) and v >= 0):
      raise ValueError(f"{name} must be a finite non-negative distance in metres, got {v!r}")
  if pos_dist_m > neg_dist_m:
    raise ValueError(f"pos_dist_m ({pos_dist_m!r}) must not exceed neg_dist_m ({neg_dist_m!r})")
  search = max(min(float(cutoff_factor), 2.0) * float(radius_m), float(neg_dist_m))
  return {
      "radius_m": float(radius_m), "fov_deg": float(fov_deg), "normalization": str(normalization),
      "cutoff_factor": float(cutoff_factor), "pos_dist_m": float(pos_dist_m),
      "neg_dist_m": float(neg_dist_m), "search_radius_m": search, "method": METHOD,
  }


def city_pair_table(query: ImageTable, database: ImageTable, *,
                    radius_m: float = DEFAULT_PARAMS["radius_m"],
                    fov_deg: float = DEFAULT_PARAMS["fov_deg"],
                    normalization: str = DEFAULT_PARAMS["normalization"],
                    cutoff_factor: float = DEFAULT_PARAMS["cutoff_factor"],
                    pos_dist_m: float = DEFAULT_PARAMS["pos_dist_m"],
                    neg_dist_m: float = DEFAULT_PARAMS["neg_dist_m"]) -> PairTable:
  """Sparse graded (FoV) and binary (distance) labels of all (query, database) pairs of one city.

  Every pair whose camera centres are within the search radius
  max(min(cutoff_factor, 2) * radius_m, neg_dist_m) is listed (found with a k-d tree on UTM,
  processed in blocks of queries, so memory grows with the number of listed pairs only). Pairs
  that are not listed have psi = 0 and sim = 0 (they are too far apart for either to be non-zero;
  min(cutoff_factor, 2) because beyond 2r the overlap is 0 anyway).

  * psi = fov_overlap(query, database) with the given parameters, and exactly 0 when either image
    is a panorama (`ImageTable.pano`) or has no finite heading: such pairs never get a label that
    depends on a meaningless compass angle.
  * sim = 1 (positive) if dist <= pos_dist_m, 0 (negative) if dist > neg_dist_m, -1 (ambiguous)
    otherwise; dist is the float64 Euclidean UTM distance (stored rounded to float32).

  Args:
    query, database: the two image sets of the city (rows are indexed by position).
    radius_m, fov_deg, normalization, cutoff_factor: see `fov_overlap`.
    pos_dist_m, neg_dist_m: distance thresholds of the binary label, 0 <= pos_dist_m <= neg_dist_m.

  Returns:
    PairTable sorted by (query, database) in CSR layout, `params` holding every parameter, the
    search radius and the labelling method.

  Raises:
    ValueError: on an invalid parameter or a non-finite UTM position.
  """
  params = pair_table_params(radius_m=radius_m, fov_deg=fov_deg, normalization=normalization,
                             cutoff_factor=cutoff_factor, pos_dist_m=pos_dist_m,
                             neg_dist_m=neg_dist_m)
  _check_positions(query, "query")
  _check_positions(database, "database")
  search = params["search_radius_m"]
  nq, ndb = len(query), len(database)
  q_ok = ~np.asarray(query.pano, bool) & np.isfinite(query.heading)
  db_ok = ~np.asarray(database.pano, bool) & np.isfinite(database.heading)
  q_idx, db_idx, psi, sim, dist = [], [], [], [], []
  if nq and ndb:
    db_tree = spatial.cKDTree(database.utm)
    # A hair above `search` so that the k-d tree's rounding cannot drop a pair exactly at the
    # radius; the exact test is redone below on the float64 distance.
    reach = search * (1.0 + 1e-9) + 1e-9
    for q0 in range(0, nq, _QUERY_BLOCK):
      q_tree = spatial.cKDTree(query.utm[q0:q0 + _QUERY_BLOCK])
      found = q_tree.sparse_distance_matrix(db_tree, reach, output_type="ndarray")
      qi = found["i"].astype(np.int64) + q0
      dj = found["j"].astype(np.int64)
      d = np.hypot(*(database.utm[dj] - query.utm[qi]).T)
      keep = d <= search
      order = np.lexsort((dj[keep], qi[keep]))
      qi, dj, d = qi[keep][order], dj[keep][order], d[keep][order]
      p = np.zeros(len(qi), np.float64)
      ok = np.flatnonzero(q_ok[qi] & db_ok[dj])
      if len(ok):
        p[ok] = fov_overlap(query.utm[qi[ok]], query.heading[qi[ok]], database.utm[dj[ok]],
                            database.heading[dj[ok]], radius_m=radius_m, fov_deg=fov_deg,
                            normalization=normalization, cutoff_factor=cutoff_factor)
      s = np.full(len(qi), SIM_AMBIGUOUS, np.int8)
      s[d <= pos_dist_m] = SIM_POSITIVE
      s[d > neg_dist_m] = SIM_NEGATIVE
      q_idx.append(qi)
      db_idx.append(dj.astype(np.int32))
      psi.append(p.astype(np.float32))
      sim.append(s)
      dist.append(d.astype(np.float32))

  def cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

  q_all = cat(q_idx, np.int64)
  indptr = np.zeros(nq + 1, np.int64)
  np.cumsum(np.bincount(q_all, minlength=nq), out=indptr[1:])
  return PairTable(num_queries=nq, num_database=ndb, indptr=indptr, db_idx=cat(db_idx, np.int32),
                   psi=cat(psi, np.float32), sim=cat(sim, np.int8), dist=cat(dist, np.float32),
                   params=params)

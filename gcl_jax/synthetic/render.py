"""Rendering of the synthetic world: appearance conditions, transient objects and the ray caster.

`render_view` ray casts one image with a real pinhole camera (90 degree horizontal field of view)
or a cylindrical panorama: one ray per column against all vertical segments (facades, car faces,
pedestrian billboards) and circles (trunks, poles, lamps, tree crowns), rows mapped to heights on
the hit surfaces, a ground plane below and the sky above. Surfaces are then shaded (albedo,
repainting epochs, lit windows, snow, sun with cast shadows, street lamps, fog) and passed
through a camera response (exposure, white balance, gamma, saturation, contrast, noise).

Place identity lives in the STRUCTURE of a city (`layout`, `paint`); a `Condition` changes only
the appearance, and `Transients` (cars, pedestrians) occlude it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gcl_jax.synthetic import paint
from gcl_jax.synthetic.common import (LEVELS, NEAR, PPM, hash01, noise, sample_noise, seeded_rng,
                                     srgb_to_linear)
from gcl_jax.synthetic.layout import CONDITIONS, Camera, City, Street, far_from_crossings

# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Condition:
  """Appearance of one traversal (light, weather, season, camera response).

  Colours are linear RGB; `sun` is a unit vector (east, north, up) towards the sun.
  """

  name: str
  night: bool
  season: str  # "summer", "autumn" or "winter"
  ambient: tuple[float, float, float]
  sun_colour: tuple[float, float, float]
  sun: tuple[float, float, float]
  sky_horizon: tuple[float, float, float]
  sky_zenith: tuple[float, float, float]
  cloud_colour: tuple[float, float, float]
  cloud_cover: float
  fog_colour: tuple[float, float, float]
  fog_distance: float
  window_lit: float  # Fraction of windows lit.
  lamps_on: float  # Street lamp intensity (0 = off).
  wet: bool
  exposure: float
  white_balance: tuple[float, float, float]
  gamma: float
  saturation: float
  contrast: float
  noise: float
  seed: int
  epoch: int = 0  # Which repainting state of the city (years pass between epochs).


def _light_table(lighting: str, sun: tuple[float, float, float], u) -> dict:
  """Ambient, sun and sky colours of a lighting ("sunny", "overcast", "dusk", "night")."""
  no_sun = (0.0, 0.0, 1.0)
  if lighting == "sunny":
    return {"ambient": (0.22, 0.25, 0.32), "sun_colour": (1.2, 1.12, 0.98), "sun": sun,
            "sky_horizon": (0.62, 0.75, 0.92), "sky_zenith": (0.18, 0.36, 0.75),
            "cloud_colour": (0.95, 0.95, 0.97), "cloud_cover": u(0.0, 0.5)}
  if lighting == "overcast":
    g = u(0.45, 0.85)
    return {"ambient": (g, g, g * 1.04), "sun_colour": (0.0, 0.0, 0.0), "sun": no_sun,
            "sky_horizon": (0.82, 0.83, 0.85), "sky_zenith": (0.62, 0.64, 0.68),
            "cloud_colour": (0.55, 0.56, 0.6), "cloud_cover": u(0.4, 0.9)}
  if lighting == "dusk":
    return {"ambient": (0.30, 0.22, 0.2), "sun_colour": (0.0, 0.0, 0.0), "sun": no_sun,
            "sky_horizon": (0.95, 0.52, 0.28), "sky_zenith": (0.16, 0.14, 0.32),
            "cloud_colour": (0.55, 0.3, 0.35), "cloud_cover": u(0.2, 0.7)}
  return {"ambient": (0.018, 0.02, 0.032), "sun_colour": (0.0, 0.0, 0.0), "sun": no_sun,
          "sky_horizon": (0.05, 0.045, 0.05), "sky_zenith": (0.004, 0.006, 0.015),
          "cloud_colour": (0.06, 0.05, 0.05), "cloud_cover": u(0.0, 0.6)}


def _fog_and_snow_sky(name: str, season: str, lighting: str, k: dict, u) -> tuple[tuple, float]:
  """Applies fog and a winter overcast sky to the light table `k`; returns (fog colour, range)."""
  fog_distance = 600.0
  fog_colour = k["sky_horizon"]
  if name == "fog":
    fog_distance = u(14.0, 35.0)
    fog_colour = tuple(float(c) for c in np.array((0.78, 0.8, 0.82)) * u(0.85, 1.05))
    k["sky_horizon"] = k["sky_zenith"] = fog_colour
    k["cloud_cover"] = 0.0
  if season == "winter" and lighting == "overcast":
    k["sky_horizon"], k["sky_zenith"] = (0.86, 0.87, 0.9), (0.72, 0.74, 0.78)
  return fog_colour, fog_distance


def make_condition(name: str, seed: int, epoch: int = 0) -> Condition:
  """Draws a traversal's appearance for condition `name` (one of CONDITIONS) in `epoch`."""
  if name not in CONDITIONS:
    raise ValueError(f"unknown condition {name!r}; known: {CONDITIONS}")
  rng = seeded_rng(seed, "condition", name)
  u = rng.uniform
  az = math.radians(u(0, 360))
  # Every entry is evaluated (the draws keep their order whatever `name` is).
  lighting = {"sunny": "sunny", "overcast": "overcast", "autumn": rng.choice(["sunny", "overcast"]),
              "winter": rng.choice(["sunny", "overcast"]), "dusk": "dusk", "night": "night",
              "fog": "overcast"}[name]
  season = {"autumn": "autumn", "winter": "winter"}.get(name, "summer")
  if name == "night" and rng.random() < 0.3:
    season = "winter"
  el = math.radians(u(12, 28) if season == "winter" else u(25, 60))
  sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
  k = _light_table(lighting, sun, u)
  fog_colour, fog_distance = _fog_and_snow_sky(name, season, lighting, k, u)
  wb = np.exp(rng.normal(0.0, 0.1, 3))
  if name == "dusk":
    wb = wb * np.array([1.1, 0.98, 0.85])
  exposure = float(np.exp(rng.normal(0.0, 0.3)))
  if lighting == "night":
    exposure *= 3.0
  elif lighting == "dusk":
    exposure *= 1.6
  return Condition(
      name=name, night=lighting == "night", season=season,
      ambient=tuple(map(float, k["ambient"])), sun_colour=tuple(map(float, k["sun_colour"])),
      sun=tuple(map(float, k["sun"])), sky_horizon=tuple(map(float, k["sky_horizon"])),
      sky_zenith=tuple(map(float, k["sky_zenith"])),
      cloud_colour=tuple(map(float, k["cloud_colour"])), cloud_cover=float(k["cloud_cover"]),
      fog_colour=tuple(map(float, fog_colour)), fog_distance=float(fog_distance),
      window_lit={"night": u(0.25, 0.55), "dusk": u(0.1, 0.3)}.get(lighting, 0.0),
      lamps_on={"night": 1.0, "dusk": 0.5}.get(lighting, 0.0),
      wet=bool(name == "autumn" and rng.random() < 0.6) or bool(name == "night" and
                                                              rng.random() < 0.3),
      exposure=exposure, white_balance=tuple(map(float, wb)), gamma=float(u(1.9, 2.5)),
      saturation=float(u(0.6, 1.25)), contrast=float(u(0.8, 1.15)),
      noise=float(u(0.03, 0.06) if lighting == "night" else u(0.006, 0.025)),
      seed=int(rng.integers(0, 2 ** 31)), epoch=int(epoch))


# ---------------------------------------------------------------------------------------------
# Transient objects
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Transients:
  """Cars (as facade-like segments) and pedestrians of one traversal."""

  seg_p0: np.ndarray  # (S, 2)
  seg_p1: np.ndarray
  seg_col0: np.ndarray  # (S,) atlas column of the face texture
  seg_texw: np.ndarray  # (S,) texture width in texels
  roof_col0: np.ndarray  # (S,) atlas column of the roof texture (seen through the open top)
  centre: np.ndarray  # (S, 2) centre of the car the segment belongs to
  people: np.ndarray  # (P, 3): x, y, template index

  @staticmethod
  def empty() -> "Transients":
    z = np.zeros((0, 2))
    i = np.zeros(0, np.int64)
    return Transients(z, z, i, i, i, z, np.zeros((0, 3)))


@dataclasses.dataclass
class _CarFaces:
  """Car faces collected for `Transients` (one entry per face)."""

  p0: list = dataclasses.field(default_factory=list)
  p1: list = dataclasses.field(default_factory=list)
  col0: list = dataclasses.field(default_factory=list)
  texw: list = dataclasses.field(default_factory=list)
  roof: list = dataclasses.field(default_factory=list)
  centre: list = dataclasses.field(default_factory=list)


def _add_car(city: City, street: Street, rng: np.random.Generator, faces: _CarFaces, a: float,
             lat: float) -> None:
  """Adds the 4 faces of a random car template centred at (`a`, `lat`) of `street`."""
  side_c, end_c, roof_c, length, width = city.car_templates[
      rng.integers(len(city.car_templates))]
  hl, hw = length / 2, width / 2
  corners = [(a - hl, lat - hw), (a + hl, lat - hw), (a + hl, lat + hw), (a - hl, lat + hw)]
  pts = [np.array(street.point(c[0], c[1])) for c in corners]
  for k in range(4):
    faces.p0.append(pts[k])
    faces.p1.append(pts[(k + 1) % 4])
    long_side = k % 2 == 0
    faces.col0.append(side_c if long_side else end_c)
    faces.texw.append(int(math.ceil((length if long_side else width) * PPM)))
    faces.roof.append(roof_c)
    faces.centre.append(street.point(a, lat))


def make_transients(city: City, street: Street, camera_lateral: float, density: float,
                    rng: np.random.Generator) -> Transients:
  """Parked and moving cars and pedestrians along `street` for one traversal."""
  faces, people = _CarFaces(), []
  if density > 0:
    for sgn in (-1.0, 1.0):
      a = street.start + rng.uniform(-5, 10)
      while a < street.end:  # Parked cars.
        if rng.random() < 0.55 and far_from_crossings(a, street, city.streets):
          _add_car(city, street, rng, faces, a, sgn * (street.road_half - 1.1))
        a += rng.uniform(5.5, 14.0) / density
      lat = sgn * (street.road_half - 3.0) * 0.5 + sgn * 0.3
      if abs(lat - camera_lateral) > 2.6:  # Moving cars, in lanes the camera is not in.
        a = street.start + rng.uniform(0, 40)
        while a < street.end:
          _add_car(city, street, rng, faces, a, lat)
          a += rng.uniform(25.0, 70.0) / density
      a = street.start + rng.uniform(0, 8)
      while a < street.end:  # Pedestrians on the sidewalk.
        lat = sgn * (street.road_half + rng.uniform(0.5, street.sidewalk - 0.4))
        x, y = street.point(a, lat)
        people.append((x, y, rng.integers(len(city.person_templates))))
        a += rng.uniform(4.0, 22.0) / density
  if not faces.p0:
    return Transients.empty()
  return Transients(np.array(faces.p0), np.array(faces.p1), np.array(faces.col0, np.int64),
                    np.array(faces.texw, np.int64), np.array(faces.roof, np.int64),
                    np.array(faces.centre, np.float64),
                    np.array(people, np.float64).reshape(-1, 3))


# ---------------------------------------------------------------------------------------------
# Ray casting
# ---------------------------------------------------------------------------------------------

_K_SKY, _K_GROUND, _K_SEG, _K_CYL, _K_CROWN = range(5)


@dataclasses.dataclass(frozen=True)
class _View:
  """The rays of one (supersampled) image.

  A ray point is C + t * D(u): t is the depth along the optical axis (pinhole) or the horizontal
  distance (panorama); pixel row v sees height h + (cy - v - 0.5) * t / f.
  """

  H: int
  W: int
  f: float  # Focal length in pixels.
  cy: float  # Row of the horizon.
  h: float  # Camera height.
  cpos: np.ndarray  # (2,) camera position.
  fwd: np.ndarray  # (2,) optical axis.
  right: np.ndarray  # (2,)
  D: np.ndarray  # (W, 2) ray direction of each column (unit depth).
  dn: np.ndarray  # (W,) |D|.
  Dn: np.ndarray  # (W, 2) D / |D|.
  rows: np.ndarray  # (H, 1) float64 row numbers.
  cols: np.ndarray  # (W,) column numbers.

  def band(self, t_col: np.ndarray, z_lo: np.ndarray, z_hi: np.ndarray,
           ok: np.ndarray) -> np.ndarray:
    """Flat indices of pixels whose ray height at depth t_col is within [z_lo, z_hi]."""
    tt = np.where(ok, t_col, 1.0)
    r0 = np.ceil(self.cy - (z_hi - self.h) * self.f / tt - 0.5)
    r1 = np.floor(self.cy + (self.h - z_lo) * self.f / tt - 0.5) + 1
    r0 = np.where(ok, np.clip(r0, 0, self.H), 0)
    r1 = np.where(ok, np.clip(r1, 0, self.H), 0)
    return np.flatnonzero((self.rows >= r0[None, :]) & (self.rows < r1[None, :]))


def _make_view(camera: Camera, H: int, W: int) -> _View:
  """The rays of an H x W image taken by `camera`."""
  hd = math.radians(camera.heading_deg)
  fwd = np.array([math.sin(hd), math.cos(hd)])
  right = np.array([math.cos(hd), -math.sin(hd)])
  if camera.panorama:
    f = W / (2 * math.pi)
    ang = hd + 2 * math.pi * ((np.arange(W) + 0.5) / W - 0.5)
    D = np.stack([np.sin(ang), np.cos(ang)], -1)
    cy = H / 2
  else:
    f = (W / 2) / math.tan(math.radians(45.0))
    xc = (np.arange(W) + 0.5 - W / 2) / f
    D = fwd[None, :] + xc[:, None] * right[None, :]
    cy = H / 2 + f * math.tan(math.radians(camera.pitch_deg))
  dn = np.linalg.norm(D, axis=1)
  return _View(H=H, W=W, f=f, cy=cy, h=camera.height_m, cpos=np.array([camera.x, camera.y]),
               fwd=fwd, right=right, D=D, dn=dn, Dn=D / dn[:, None],
               rows=np.arange(H, dtype=np.float64)[:, None], cols=np.arange(W))


@dataclasses.dataclass
class _Hits:
  """The nearest surface of every pixel (flat index): depth, kind and what was hit."""

  depth: np.ndarray  # (N,) float64, inf = nothing yet
  kind: np.ndarray  # (N,) int8 _K_*
  obj: np.ndarray  # (N,) int64 flat atlas index / cylinder index / crown index
  seg_of: np.ndarray  # (N,) int64 segment index (segments only)

  @staticmethod
  def empty(n: int) -> "_Hits":
    return _Hits(np.full(n, np.inf), np.zeros(n, np.int8), np.zeros(n, np.int64),
                 np.zeros(n, np.int64))


@dataclasses.dataclass(frozen=True)
class _Segments:
  """Every vertical segment of one view: facades, car faces, then pedestrian billboards."""

  P0: np.ndarray  # (S, 2) start
  E: np.ndarray  # (S, 2) end - start
  C0: np.ndarray  # (S,) first atlas column of the texture shown
  TW: np.ndarray  # (S,) texture width (level-0 texels)
  TOP: np.ndarray  # (S,) top height
  BACK: np.ndarray  # (S,) bool: a car face seen from behind (shows the car's roof)
  seg_len: np.ndarray  # (S,)
  seg_n: np.ndarray  # (S, 2) unit normal


def _collect_segments(city: City, tr: Transients, cpos: np.ndarray) -> _Segments:
  """The city's facades, the cars' faces and billboards of pedestrians facing the camera."""
  p0 = [city.seg_p0, tr.seg_p0]
  p1 = [city.seg_p1, tr.seg_p1]
  c0 = [city.seg_col0, tr.seg_col0]
  tw = [city.seg_texw, tr.seg_texw]
  top = [city.seg_top, np.full(len(tr.seg_p0), 2.5)]
  # A car is an open box of 4 faces: a face seen from behind is seen through the open top, so it
  # shows the car's roof.
  back = [np.zeros(len(city.seg_p0), bool)]
  if len(tr.seg_p0):
    mid = 0.5 * (tr.seg_p0 + tr.seg_p1)
    back.append(((mid - tr.centre) * (cpos - mid)).sum(-1) < 0)
    c0[1] = np.where(back[1], tr.roof_col0, tr.seg_col0)
  if len(tr.people):
    rel = tr.people[:, :2] - cpos
    dist = np.linalg.norm(rel, axis=1)
    keep = dist > 1.0
    rel, dist, ppl = rel[keep], dist[keep], tr.people[keep]
    perp = np.stack([-rel[:, 1], rel[:, 0]], -1) / dist[:, None]
    p0.append(ppl[:, :2] - 0.3 * perp)
    p1.append(ppl[:, :2] + 0.3 * perp)
    tmpl = ppl[:, 2].astype(int)
    c0.append(np.array([city.person_templates[t][0] for t in tmpl], np.int64))
    tw.append(np.full(len(tmpl), int(math.ceil(0.6 * PPM)), np.int64))
    top.append(np.full(len(tmpl), 2.0))
    back.append(np.zeros(len(tmpl), bool))
  P0 = np.concatenate(p0)
  E = np.concatenate(p1) - P0
  seg_len = np.linalg.norm(E, axis=1)
  return _Segments(P0=P0, E=E, C0=np.concatenate(c0), TW=np.concatenate(tw),
                   TOP=np.concatenate(top), BACK=np.concatenate(back), seg_len=seg_len,
                   seg_n=np.stack([-E[:, 1], E[:, 0]], -1) / seg_len[:, None])


def _nearest_segments(v: _View, sg: _Segments,
                      max_layers: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per column, the nearest `max_layers` segments hit, front to back: (t, segment, s)."""
  rel0 = sg.P0 - v.cpos
  D, E = v.D, sg.E
  den = D[:, 0:1] * E[None, :, 1] - D[:, 1:2] * E[None, :, 0]
  with np.errstate(divide="ignore", invalid="ignore"):
    t = (rel0[None, :, 0] * E[None, :, 1] - E[None, :, 0] * rel0[None, :, 1]) / den
    s = (D[:, 1:2] * rel0[None, :, 0] - D[:, 0:1] * rel0[None, :, 1]) / den
  t = np.where((np.abs(den) > 1e-12) & (t > NEAR / v.dn[:, None]) & (s >= 0) & (s <= 1), t,
               np.inf)
  K = min(max_layers, t.shape[1])
  if t.shape[1] > K:
    order = np.argpartition(t, K - 1, axis=1)[:, :K]
  else:
    order = np.tile(np.arange(t.shape[1]), (v.W, 1))
  tK = np.take_along_axis(t, order, 1)
  srt = np.argsort(tK, axis=1)
  order = np.take_along_axis(order, srt, 1)
  tK = np.take_along_axis(tK, srt, 1)
  return tK, order, np.take_along_axis(s, order, 1)


def _texels(v: _View, atlas: paint.Atlas, sg: _Segments, sk: np.ndarray, tks: np.ndarray,
            s_frac: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Flat atlas indices (mip level chosen per column) seen by pixels `idx`; and their columns."""
  s_m = s_frac * sg.seg_len[sk]
  foot = tks * v.dn / v.f * PPM  # Level-0 texels per pixel.
  lvl = np.clip(np.round(np.log2(np.maximum(foot, 1e-6))), 0, LEVELS - 1).astype(np.int64)
  ppm_l = PPM / (2.0 ** lvl)
  col = atlas.level_offset[lvl] + (sg.C0[sk] >> lvl) + np.clip(
      np.floor(s_m * ppm_l).astype(np.int64), 0, np.maximum((sg.TW[sk] >> lvl) - 1, 0))
  c = idx % v.W
  Z = v.h + (v.cy - (idx // v.W + 0.5)) * tks[c] / v.f
  row = np.clip(np.floor(Z * ppm_l[c]).astype(np.int64), 0, atlas.level_height[lvl[c]] - 1)
  return col[c] + row * atlas.level_width[lvl[c]], c


def _cast_segments(v: _View, atlas: paint.Atlas, sg: _Segments, hits: _Hits) -> None:
  """Hits of the segments, layer by layer front to back (a covered pixel stays covered)."""
  tK, order, sK = _nearest_segments(v, sg)
  open_ = np.ones(v.H * v.W, bool)
  for k in range(tK.shape[1]):
    tk, sk = tK[:, k], order[:, k]
    ok = np.isfinite(tk)
    if not ok.any():
      break
    tks = np.where(ok, tk, 1.0)
    idx = v.band(tks, np.zeros(v.W), sg.TOP[sk], ok)
    idx = idx[open_[idx]]
    if not len(idx):
      continue
    flat, c = _texels(v, atlas, sg, sk, tks, sK[:, k], idx)
    a = atlas.alpha[flat]
    sel = idx[a]
    hits.depth[sel] = tks[c[a]]
    hits.kind[sel] = _K_SEG
    hits.obj[sel] = flat[a]
    hits.seg_of[sel] = sk[c[a]]
    open_[sel] = False


def _circle_hits(v: _View, circles: np.ndarray):
  """Per column and circle: entry depth (inf = missed), distance along and across the ray."""
  relc = circles[:, :2] - v.cpos
  along = v.Dn @ relc.T  # (W, n)
  perp = v.Dn[:, 0:1] * relc[None, :, 1] - v.Dn[:, 1:2] * relc[None, :, 0]
  r = circles[:, 2][None, :]
  half = np.sqrt(np.maximum(r ** 2 - perp ** 2, 0.0))
  t_in = (along - half) / v.dn[:, None]
  t_in = np.where((np.abs(perp) < r) & (t_in > NEAR / v.dn[:, None]), t_in, np.inf)
  return t_in, along, perp


def _near_circles(v: _View, circles: np.ndarray) -> np.ndarray:
  """Indices of the circles within 150 m of the camera."""
  if not len(circles):
    return np.zeros(0, np.int64)
  return np.flatnonzero(np.linalg.norm(circles[:, :2] - v.cpos, axis=1) < 150.0)


def _nearest_first(v: _View, t_in: np.ndarray, passes: int):
  """Per pass, each column's nearest circle not taken yet.

  Yields (j, t, ok), t = 1 where the column has none left (ok False); stops early once no column
  has one. Consumes `t_in`.
  """
  cols = v.cols
  for _ in range(passes):
    j = np.argmin(t_in, axis=1)
    t = t_in[cols, j]
    t_in[cols, j] = np.inf
    ok = np.isfinite(t)
    if not ok.any():
      return
    yield j, np.where(ok, t, 1.0), ok


def _cast_cylinders(v: _View, city: City, hits: _Hits) -> None:
  """Hits of trunks, lamp poles and lamp heads (the 2 nearest per column)."""
  idx_c = _near_circles(v, city.cyl)
  if not len(idx_c):
    return
  cz = city.cyl[idx_c]
  t_in, _, _ = _circle_hits(v, cz)
  for j, tks, ok in _nearest_first(v, t_in, min(2, len(idx_c))):
    idx = v.band(tks, cz[j, 3], cz[j, 4], ok)
    c = idx % v.W
    win = tks[c] < hits.depth[idx]
    sel = idx[win]
    hits.depth[sel] = tks[c[win]]
    hits.kind[sel] = _K_CYL
    hits.obj[sel] = idx_c[j[c[win]]]


def _cast_crowns(v: _View, city: City, season: str, hits: _Hits) -> None:
  """Hits of tree crowns (ellipsoids with leafy, season-dependent holes; 2 nearest per column)."""
  idx_t = _near_circles(v, city.crowns)
  if not len(idx_t):
    return
  cr = city.crowns[idx_t]
  t_in, along, perp = _circle_hits(v, cr)
  leaf = noise(2)
  thr = {"summer": 0.38, "autumn": 0.45, "winter": 0.62}[season]
  cols = v.cols
  for j, tks, ok in _nearest_first(v, t_in, min(2, len(idx_t))):
    tmid = np.where(ok, along[cols, j] / v.dn, 1.0)
    q = np.clip(perp[cols, j] / cr[j, 2], -1, 1)
    e = cr[j, 4] * np.sqrt(1 - q ** 2)
    idx = v.band(tmid, cr[j, 3] - e, cr[j, 3] + e, ok)
    c = idx % v.W
    Z = v.h + (v.cy - (idx // v.W + 0.5)) * tmid[c] / v.f
    tid = cr[j[c], 5]
    nz = sample_noise(leaf, (q[c] * 12 + tid * 37.0) * 3.0, Z * 9.0 + tid * 11.0)
    edge = np.abs(Z - cr[j[c], 3]) / np.maximum(e[c], 1e-6)
    win = (nz + 0.25 * (1 - edge) > thr) & (tks[c] < hits.depth[idx])
    sel = idx[win]
    hits.depth[sel] = tks[c[win]]
    hits.kind[sel] = _K_CROWN
    hits.obj[sel] = idx_t[j[c[win]]]


# ---------------------------------------------------------------------------------------------
# Shading
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Surface:
  """The solid (non-sky) pixels of one view, their 3-D points and shading inputs."""

  solid: np.ndarray  # (M,) flat pixel indices
  ks: np.ndarray  # (M,) kind
  td: np.ndarray  # (M,) depth
  cs: np.ndarray  # (M,) pixel column
  px: np.ndarray  # (M,) point east
  py: np.ndarray  # (M,) point north
  pz: np.ndarray  # (M,) point height
  alb: np.ndarray  # (M, 3) float32 linear albedo
  emis: np.ndarray  # (M, 3) float32 emitted light
  normal: np.ndarray  # (M, 3) float32 unit normal


def _surface(v: _View, hits: _Hits, pr: np.ndarray, pc: np.ndarray,
             solid: np.ndarray) -> _Surface:
  """The 3-D points of the solid pixels (albedo, emission and normals still zero)."""
  td = hits.depth[solid]
  cs = pc[solid]
  n = len(solid)
  return _Surface(
      solid=solid, ks=hits.kind[solid], td=td, cs=cs, px=v.cpos[0] + td * v.D[cs, 0],
      py=v.cpos[1] + td * v.D[cs, 1], pz=v.h + (v.cy - pr[solid]) * td / v.f,
      alb=np.zeros((n, 3), np.float32), emis=np.zeros((n, 3), np.float32),
      normal=np.zeros((n, 3), np.float32))


_SIGN_PERMUTATIONS = ((0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2))


def _repaint(city: City, cond: Condition, a: np.ndarray, mat: np.ndarray, si: np.ndarray,
             static: np.ndarray) -> None:
  """Applies the epoch's wall tints and sign channel permutations to albedos `a` in place."""
  e_ = cond.epoch % len(city.wall_tint)
  wall_px = static & (mat == paint.M_WALL)
  a[wall_px] *= city.wall_tint[e_, si[wall_px]]
  sign_px = np.flatnonzero(static & (mat == paint.M_SIGN))
  perm = city.sign_perm[e_, si[sign_px]]
  for pk, pp in enumerate(_SIGN_PERMUTATIONS):
    if pk:
      sel_ = sign_px[perm == pk]
      a[sel_] = a[sel_][:, pp]


def _emission(atlas: paint.Atlas, fi: np.ndarray, a: np.ndarray, g: np.ndarray, mat: np.ndarray,
              cond: Condition) -> np.ndarray:
  """Light emitted by lit windows, shop signs and car lights (dusk and night)."""
  wid = atlas.wid[fi]
  e = np.zeros_like(a)
  lit = (hash01(wid, cond.seed) < cond.window_lit) & (wid > 0)
  warm = np.stack([np.ones(len(wid), np.float32),
                   0.75 + 0.2 * hash01(wid, cond.seed + 1),
                   0.45 + 0.4 * hash01(wid, cond.seed + 2)], -1)
  inten = 0.2 + 0.35 * hash01(wid, cond.seed + 3)
  e += g * (lit * inten)[:, None] * warm
  sign = (mat == paint.M_SIGN) & (hash01(wid, cond.seed + 4) < 0.7)
  e[sign] += a[sign] * 0.6 * cond.lamps_on
  e[mat == paint.M_HEAD] += 1.5 * cond.lamps_on
  e[mat == paint.M_TAIL] += np.array([0.9, 0.05, 0.05], np.float32) * cond.lamps_on
  return e


def _shade_segments(v: _View, city: City, cond: Condition, hits: _Hits, sg: _Segments,
                    sf: _Surface) -> None:
  """Albedo, normal and emission of facade, car and pedestrian pixels."""
  m = np.flatnonzero(sf.ks == _K_SEG)
  if not len(m):
    return
  atlas = city.atlas
  fi = hits.obj[sf.solid[m]]
  a = srgb_to_linear(atlas.rgb[fi])
  mat = atlas.mat[fi]
  g = atlas.glass[fi][:, None]
  if cond.season == "winter":
    sn = atlas.snow[fi][:, None] * 0.9
    a = a * (1 - sn) + 0.85 * sn
  si = hits.seg_of[sf.solid[m]]
  if cond.epoch:
    _repaint(city, cond, a, mat, si, si < len(city.seg_p0))
  nrm = sg.seg_n[si]
  to_cam = v.cpos - np.stack([sf.px[m], sf.py[m]], -1)
  sgn = np.where((nrm * to_cam).sum(-1) >= 0, 1.0, -1.0)[:, None]
  nrm3 = np.concatenate([nrm * sgn, np.zeros((len(nrm), 1))], -1)
  nrm3[sg.BACK[si]] = (0.0, 0.0, 1.0)
  sf.normal[m] = nrm3
  if not cond.night:  # Glass reflects the sky.
    a = a + g * np.array(cond.sky_horizon, np.float32) * 0.3
  sf.alb[m] = a
  if cond.window_lit > 0:
    sf.emis[m] = _emission(atlas, fi, a, g, mat, cond)


def _shade_cylinders(city: City, cond: Condition, hits: _Hits, sf: _Surface) -> None:
  """Albedo, normal and emission (lit lamp heads) of trunk, pole and lamp pixels."""
  m = np.flatnonzero(sf.ks == _K_CYL)
  if not len(m):
    return
  ci = hits.obj[sf.solid[m]]
  kd = city.cyl[ci, 5].astype(int)
  cols_c = np.array([(0.28, 0.2, 0.14), (0.22, 0.23, 0.24), (0.75, 0.75, 0.7)], np.float32)
  sf.alb[m] = srgb_to_linear(cols_c[kd])
  dxy = np.stack([sf.px[m] - city.cyl[ci, 0], sf.py[m] - city.cyl[ci, 1]], -1)
  sf.normal[m, :2] = dxy / np.maximum(np.linalg.norm(dxy, axis=1, keepdims=True), 1e-6)
  if cond.lamps_on > 0:
    sf.emis[m] += (kd == 2)[:, None] * np.array([1.6, 1.4, 1.0], np.float32) * cond.lamps_on


def _shade_crowns(city: City, cond: Condition, hits: _Hits, sf: _Surface) -> None:
  """Albedo (season's leaf colour) and normal of tree crown pixels."""
  m = np.flatnonzero(sf.ks == _K_CROWN)
  if not len(m):
    return
  ci = hits.obj[sf.solid[m]]
  var = hash01(city.crowns[ci, 5].astype(np.int64), 7)[:, None]
  base = {"summer": (0.2, 0.38, 0.12), "autumn": (0.75, 0.42, 0.1),
          "winter": (0.32, 0.27, 0.22)}[cond.season]
  shade = sample_noise(noise(2), sf.px[m] * 9.0, sf.pz[m] * 9.0)[:, None]
  sf.alb[m] = srgb_to_linear(np.array(base, np.float32) * (0.7 + 0.6 * var) * (0.6 + 0.8 * shade))
  cr = city.crowns[ci]
  nn = np.stack([(sf.px[m] - cr[:, 0]) / cr[:, 2], (sf.py[m] - cr[:, 1]) / cr[:, 2],
                 (sf.pz[m] - cr[:, 3]) / cr[:, 4]], -1)
  sf.normal[m] = nn / np.maximum(np.linalg.norm(nn, axis=1, keepdims=True), 1e-6)


def _lamp_light(v: _View, city: City, cond: Condition, sf: _Surface) -> np.ndarray | None:
  """Light of the street lamps within 90 m on every solid pixel, or None if there is none."""
  near = np.flatnonzero(np.linalg.norm(city.lamps[:, :2] - v.cpos, axis=1) < 90)
  if not len(near):
    return None
  P = np.stack([sf.px, sf.py, sf.pz], -1).astype(np.float32)
  acc = np.zeros(len(P), np.float32)
  for li in near:
    L = city.lamps[li].astype(np.float32) - P
    d2 = np.einsum("ij,ij->i", L, L)
    cosn = np.clip(np.einsum("ij,ij->i", sf.normal, L), 0, None) / np.sqrt(d2 + 1e-6)
    acc += cosn * 1.4 / (1.0 + d2 / 9.0)
  return acc[:, None] * (np.array([1.0, 0.8, 0.55], np.float32) * cond.lamps_on)


def _light(v: _View, city: City, cond: Condition, sf: _Surface) -> np.ndarray:
  """Ambient, direct sun with cast shadows and street lamps on every solid pixel."""
  light = np.empty((len(sf.solid), 3), np.float32)
  light[:] = np.array(cond.ambient, np.float32)
  sun_c = np.array(cond.sun_colour, np.float32)
  if sun_c.any():
    sun = np.array(cond.sun, np.float32)
    ndl = np.clip(sf.normal @ sun, 0.0, None)
    vis = sun_visibility(city, sf.px, sf.py, sf.pz, sun, ndl > 0)
    light += (ndl * vis)[:, None] * sun_c
  if cond.lamps_on > 0 and len(city.lamps):
    lamps = _lamp_light(v, city, cond, sf)
    if lamps is not None:
      light += lamps
  return light


def _sky(v: _View, cond: Condition, sk: np.ndarray, pr: np.ndarray,
         pc: np.ndarray) -> np.ndarray:
  """Colours of sky pixels `sk`: gradient, clouds on a plane 300 m up, sun glow."""
  us = pc[sk]
  up = (v.cy - pr[sk]) / v.f / v.dn[us]
  el = np.arctan(np.maximum(up, 0.0))
  w = np.sqrt(np.clip(el / (math.pi / 2), 0, 1))[:, None]
  col = (np.array(cond.sky_horizon, np.float32) * (1 - w) +
         np.array(cond.sky_zenith, np.float32) * w)
  if cond.cloud_cover > 0:
    kk = 300.0 / np.maximum(up, 0.05)
    ox, oy = seeded_rng(cond.seed, "clouds").uniform(0, 2560, 2)
    cn = sample_noise(noise(12), (v.Dn[us, 0] * kk + ox) / 10.0, (v.Dn[us, 1] * kk + oy) / 10.0)
    cover = np.clip((cn - (0.75 - 0.5 * cond.cloud_cover)) * 5.0, 0, 1)[:, None]
    col = col * (1 - cover) + np.array(cond.cloud_colour, np.float32) * cover
  if np.array(cond.sun_colour, np.float32).any():
    sun = np.array(cond.sun, np.float32)
    ray = np.stack([v.Dn[us, 0] * np.cos(el), v.Dn[us, 1] * np.cos(el), np.sin(el)], -1)
    col = col + (np.clip(ray @ sun, 0, 1) ** 64)[:, None] * 1.5
  return col


def _lamp_halos(v: _View, city: City, cond: Condition, depth: np.ndarray,
                out: np.ndarray) -> None:
  """Adds the glow of visible lamp heads within 80 m to the (H, W, 3) image `out`."""
  H, W, f, cy = v.H, v.W, v.f, v.cy
  rel = city.lamps[:, :2] - v.cpos
  zc = rel @ v.fwd
  xr = rel @ v.right
  dmap = depth.reshape(H, W)
  for li in np.flatnonzero((zc > 1.0) & (zc < 80.0)):
    u = W / 2 + f * xr[li] / zc[li]
    y = cy - f * (city.lamps[li, 2] - v.h) / zc[li]
    rad = max(1.0, 0.9 * f / zc[li])
    if not (-3 * rad < u < W + 3 * rad and -3 * rad < y < H + 3 * rad):
      continue
    ui, vi = int(np.clip(u, 0, W - 1)), int(np.clip(y, 0, H - 1))
    if dmap[vi, ui] < zc[li] - 1.0:
      continue  # Hidden behind something nearer.
    y0, y1 = int(max(0, y - 3 * rad)), int(min(H, y + 3 * rad + 1))
    x0, x1 = int(max(0, u - 3 * rad)), int(min(W, u + 3 * rad + 1))
    yy = (np.arange(y0, y1) + 0.5 - y)[:, None]
    xx = (np.arange(x0, x1) + 0.5 - u)[None, :]
    glow = np.exp(-(xx ** 2 + yy ** 2) / (2 * rad ** 2)).astype(np.float32)
    out[y0:y1, x0:x1] += glow[..., None] * (np.array([0.8, 0.65, 0.4], np.float32) * 0.5 *
                                            cond.lamps_on)


def _camera_response(out: np.ndarray, cond: Condition, seed: int, height: int, width: int,
                     ss: int) -> np.ndarray:
  """Linear (H*ss, W*ss, 3) radiance to (height, width, 3) uint8.

  Exposure and white balance (per traversal, with per-image auto-exposure and auto-white-balance
  jitter), box downsampling, gamma, saturation, contrast, sensor noise.
  """
  rng = seeded_rng(cond.seed, "image", seed)
  gain = cond.exposure * math.exp(rng.normal(0.0, 0.1))
  wb = np.array(cond.white_balance) * np.exp(rng.normal(0.0, 0.03, 3))
  out = out * (gain * wb).astype(np.float32)
  if ss > 1:
    out = out.reshape(height, ss, width, ss, 3).mean((1, 3))
  out = np.clip(out, 0, None) ** np.float32(1.0 / cond.gamma)
  lum = out.mean(-1, keepdims=True)
  out = lum + (out - lum) * cond.saturation
  out = 0.5 + (out - 0.5) * cond.contrast
  out = out + rng.normal(0.0, cond.noise, out.shape) + rng.normal(
      0.0, cond.noise * 0.5, (height, width, 1))
  return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _radiance(v: _View, city: City, cond: Condition, hits: _Hits, sg: _Segments) -> np.ndarray:
  """Ground and sky pixels, then the shaded, fogged (H, W, 3) linear radiance of the view."""
  pr = np.repeat(np.arange(v.H), v.W) + 0.5  # pixel row centre
  pc = np.tile(np.arange(v.W), v.H)  # pixel column
  ground = (pr > v.cy) & ~np.isfinite(hits.depth)
  hits.depth[ground] = v.f * v.h / (pr[ground] - v.cy)
  hits.kind[ground] = _K_GROUND
  sky = ~np.isfinite(hits.depth)
  hits.kind[sky] = _K_SKY
  sf = _surface(v, hits, pr, pc, np.flatnonzero(~sky))
  _shade_segments(v, city, cond, hits, sg, sf)
  _shade_cylinders(city, cond, hits, sf)
  _shade_crowns(city, cond, hits, sf)
  m = np.flatnonzero(sf.ks == _K_GROUND)
  if len(m):
    sf.alb[m] = ground_albedo(city, sf.px[m], sf.py[m], cond)
    sf.normal[m] = (0.0, 0.0, 1.0)
  col_solid = sf.alb * _light(v, city, cond, sf) + sf.emis
  # Aerial perspective / fog.
  trans = np.exp(-(sf.td * v.dn[sf.cs]) / cond.fog_distance).astype(np.float32)[:, None]
  fogc = np.array(cond.fog_colour, np.float32) * (0.5 if cond.night else 1.0)
  out = np.empty((v.H * v.W, 3), np.float32)
  out[sf.solid] = col_solid * trans + fogc * (1 - trans)
  sk = np.flatnonzero(sky)
  if len(sk):
    out[sk] = _sky(v, cond, sk, pr, pc)
  return out.reshape(v.H, v.W, 3)


def render_view(city: City, camera: Camera, condition: Condition, height: int, width: int, *,
                transients: Transients | None = None, supersample: int = 2,
                seed: int = 0) -> np.ndarray:
  """Ray casts one image; returns (height, width, 3) uint8 RGB.

  Pinhole camera with a 90 degree horizontal field of view (or a cylindrical 360 degree panorama),
  square pixels, no roll. One ray per column is intersected with every vertical segment (facades,
  car faces, pedestrian billboards) and circle (trunks, poles, lamps, tree crowns); rows then map
  to heights on the hit surfaces, the ground plane below and the sky above. `seed` drives only
  the per-image sensor noise, so equal arguments give identical images.
  """
  tr = transients if transients is not None else Transients.empty()
  ss = max(1, int(supersample))
  v = _make_view(camera, height * ss, width * ss)
  hits = _Hits.empty(v.H * v.W)
  sg = _collect_segments(city, tr, v.cpos)
  _cast_segments(v, city.atlas, sg, hits)
  _cast_cylinders(v, city, hits)
  _cast_crowns(v, city, condition.season, hits)
  out = _radiance(v, city, condition, hits, sg)
  if condition.lamps_on > 0 and len(city.lamps) and not camera.panorama:
    _lamp_halos(v, city, condition, hits.depth, out)
  return _camera_response(out, condition, seed, height, width, ss)


# ---------------------------------------------------------------------------------------------
# Ground and sun
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _StreetFrame:
  """Ground points relative to their nearest north-south (v) and east-west (h) streets."""

  vx: np.ndarray  # x of the north-south streets
  hy: np.ndarray  # y of the east-west streets
  iv: np.ndarray  # nearest north-south street of each point
  ih: np.ndarray  # nearest east-west street of each point
  lat_v: np.ndarray  # distance beyond the road edge of street iv (< 0 inside its road)
  lat_h: np.ndarray
  sv: np.ndarray  # sidewalk width of street iv
  sh: np.ndarray


def _street_frame(city: City, x: np.ndarray, y: np.ndarray) -> _StreetFrame:
  """Locates ground points relative to the streets of `city`."""
  vs = [s for s in city.streets if s.axis == 0]
  hs = [s for s in city.streets if s.axis == 1]
  vx = np.array([s.coord for s in vs])
  hy = np.array([s.coord for s in hs])
  dv = np.abs(x[:, None] - vx[None, :])
  iv = np.argmin(dv - np.array([s.road_half for s in vs])[None, :], axis=1)
  dh = np.abs(y[:, None] - hy[None, :])
  ih = np.argmin(dh - np.array([s.road_half for s in hs])[None, :], axis=1)
  rv = np.array([s.road_half for s in vs])[iv]
  rh = np.array([s.road_half for s in hs])[ih]
  return _StreetFrame(
      vx=vx, hy=hy, iv=iv, ih=ih, lat_v=dv[np.arange(len(x)), iv] - rv,
      lat_h=dh[np.arange(len(x)), ih] - rh, sv=np.array([s.sidewalk for s in vs])[iv],
      sh=np.array([s.sidewalk for s in hs])[ih])


def _road_markings(city: City, sf: _StreetFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Dashed centre lines (outside intersections) and zebra crossings."""
  lat_v, lat_h, sv, sh, iv, ih = sf.lat_v, sf.lat_h, sf.sv, sf.sh, sf.iv, sf.ih
  in_inter = (lat_v < sv) & (lat_h < sh)
  mark = np.zeros(len(x), bool)
  cv_ = (lat_v < 0) & ~in_inter & (np.abs(x - sf.vx[iv]) < 0.09) & ((y % 6.0) < 3.0)
  ch_ = (lat_h < 0) & ~in_inter & (np.abs(y - sf.hy[ih]) < 0.09) & ((x % 6.0) < 3.0)
  mark |= cv_ | ch_
  cross = city.crossing[iv, ih]
  zv = ((lat_v < 0) & (lat_h >= sh + 0.5) & (lat_h < sh + 3.5) &
        (((x - sf.vx[iv]) % 1.2) < 0.6) & cross)
  zh = ((lat_h < 0) & (lat_v >= sv + 0.5) & (lat_v < sv + 3.5) &
        (((y - sf.hy[ih]) % 1.2) < 0.6) & cross)
  mark |= zv | zh
  return mark


def _seasonal_ground(alb: np.ndarray, sf: _StreetFrame, x: np.ndarray, y: np.ndarray,
                     masks: tuple[np.ndarray, ...], n1: np.ndarray, n2: np.ndarray,
                     cond: Condition) -> None:
  """Snow and slush (winter), fallen leaves (autumn), wet roads, in place on `alb`."""
  road, walk, curb, other, on_v = masks
  if cond.season == "winter":
    snow = 0.82 * (0.95 + 0.1 * n2)
    alb[walk | other | curb] = snow[walk | other | curb, None]
    # Slush on the road with darker wheel tracks where traffic runs.
    lat_c = np.where(on_v, x - sf.vx[sf.iv], y - sf.hy[sf.ih])
    lane = np.abs(np.abs(lat_c) - 1.6)
    track = (np.abs(lane - 0.8) < 0.35)
    slush = np.where(track, 0.47, 0.6) * (0.9 + 0.2 * n1)
    alb[road] = slush[road, None]
  elif cond.season == "autumn":
    leaves = (n2 > 0.62) & (walk | (road & (np.minimum(np.abs(sf.lat_v), np.abs(sf.lat_h)) <
                                            1.0)))
    alb[leaves] = np.array([0.7, 0.38, 0.08], np.float32)
  if cond.wet:
    alb[road] *= 0.55


def ground_albedo(city: City, x: np.ndarray, y: np.ndarray, cond: Condition) -> np.ndarray:
  """Linear albedo of ground points: asphalt, markings, crossings, curbs, sidewalks."""
  sf = _street_frame(city, x, y)
  lat_v, lat_h = sf.lat_v, sf.lat_h
  road = (lat_v < 0) | (lat_h < 0)
  walk = ~road & ((lat_v < sf.sv) | (lat_h < sf.sh))
  n1 = sample_noise(noise(6), x * 2.0, y * 2.0)
  n2 = sample_noise(noise(2), x * 8.0, y * 8.0)
  on_v = lat_v < 0
  street_id = np.where(on_v, sf.iv, len(sf.vx) + sf.ih)
  tone = city.asphalt[street_id] * (0.85 + 0.3 * n1) * (0.92 + 0.16 * n2)
  alb = np.empty((len(x), 3), np.float32)
  alb[:] = (np.array([0.33, 0.33, 0.34], np.float32)[None, :] * tone[:, None])
  alb[_road_markings(city, sf, x, y)] = 0.8
  # Sidewalks with a curb and paving joints.
  lat_w = np.minimum(np.where(lat_v >= 0, lat_v, np.inf), np.where(lat_h >= 0, lat_h, np.inf))
  pav = np.array([0.55, 0.53, 0.5], np.float32)
  joint = ((x % 1.5) < 0.08) | ((y % 1.5) < 0.08)
  walk_col = pav[None, :] * (0.9 + 0.2 * n1)[:, None] * np.where(joint, 0.85, 1.0)[:, None]
  alb[walk] = walk_col[walk]
  curb = walk & (lat_w < 0.25)
  alb[curb] = 0.7
  other = ~road & ~walk
  alb[other] = np.array([0.3, 0.38, 0.2], np.float32)
  _seasonal_ground(alb, sf, x, y, (road, walk, curb, other, on_v), n1, n2, cond)
  return srgb_to_linear(alb).astype(np.float32)


def sun_visibility(city: City, x: np.ndarray, y: np.ndarray, z: np.ndarray, sun: np.ndarray,
                   facing: np.ndarray) -> np.ndarray:
  """1 where the point sees the sun over the buildings' height map, else 0."""
  vis = np.zeros(len(x), np.float32)
  idx = np.flatnonzero(facing)
  if not len(idx):
    return vis
  horiz = math.hypot(sun[0], sun[1])
  if horiz < 1e-6:
    vis[idx] = 1.0
    return vis
  dx, dy = sun[0] / horiz, sun[1] / horiz
  slope = sun[2] / horiz
  hm = city.heightmap
  ox, oy = city.hm_origin
  res = city.hm_res
  xs, ys, zs = x[idx], y[idx], z[idx]
  lit = np.ones(len(idx), bool)
  step = 1.0
  for k in range(1, 48):
    d = 0.6 + k * step
    qx = ((xs + dx * d - ox) / res).astype(np.int64)
    qy = ((ys + dy * d - oy) / res).astype(np.int64)
    inside = (qx >= 0) & (qx < hm.shape[1]) & (qy >= 0) & (qy < hm.shape[0])
    hq = np.where(inside, hm[np.clip(qy, 0, hm.shape[0] - 1), np.clip(qx, 0, hm.shape[1] - 1)],
                  0.0)
    lit &= hq <= zs + d * slope
    if zs.min() + d * slope > 40.0:
      break
  vis[idx] = lit
  return vis

"""Geometry of the synthetic world: its configuration, street grids, cities, traversals, cameras.

Each city is a rectangular street grid closed by a ring of buildings (`build_city`). Every block
edge is lined with buildings whose facades `paint` paints; trees and lamp posts stand along the
sidewalks. Database and query traversals (`plan_city`) drive along the streets with forward,
backward and sideways cameras (`traversal_cameras`).

Coordinates are local city metres (x east, y north); compass headings are degrees clockwise from
north.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping

import numpy as np

from gcl_jax.data.msls import TEST_CITIES, TRAIN_CITIES, VAL_CITIES
from gcl_jax.synthetic import paint
from gcl_jax.synthetic.common import UTM_ORIGIN, seeded_rng

CONDITIONS = ("sunny", "overcast", "autumn", "winter", "dusk", "night", "fog")
"""Appearance conditions a traversal can have (see `gcl_jax.synthetic.render.make_condition`)."""

# Synthetic cities must not reuse the names of real MSLS cities.
_MSLS_CITY_NAMES = frozenset(TRAIN_CITIES + VAL_CITIES + TEST_CITIES)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """What `generate_world` builds. All lengths in metres, angles in degrees.

  Attributes:
    train_cities: names of the training cities (must not be real MSLS city names).
    val_cities: names of the validation cities.
    image_height: image height in pixels.
    image_width: image width in pixels (90 degree horizontal field of view).
    streets_per_axis: inclusive (min, max) number of parallel streets in each direction; each
      city draws its own counts, so cities differ in size and layout.
    block_size_m: (min, max) spacing between neighbouring parallel street centrelines.
    frame_spacing_m: distance between consecutive frames of a traversal.
    database_passes: database traversals per street and compass heading; every street is
      driven for each of its 4 headings (both directions along it, both sides) this many times.
    query_sequences: query traversals per validation city; each covers a random stretch
      (25-55 %) of a random street with a random heading.
    train_query_sequences: query traversals per training city (more queries = more training
      pairs).
    panorama_fraction: fraction of extra database images that are 360 degree panoramas
      (`pano` True); they are added on top of full database coverage, so they are never the
      only database images near a query.
    camera_height_m: camera height above the road.
    database_jitter: (position m, heading deg, height m, pitch deg) standard deviations of the
      per-frame pose noise of database traversals.
    query_jitter: the same for query traversals.
    query_lane_shift_m: query traversals drive up to this far left/right of the database lane.
    database_conditions: (condition, weight) pairs the database traversals draw from.
    query_conditions: (condition, weight) pairs the query traversals draw from.
    epochs: number of epochs (years) the traversals are spread over; every traversal happens in
      one, and between epochs buildings get repainted and shop signs change.
    repaint_probability: probability that a building's walls (and, independently, its shop
      sign) differ from the original in a later epoch.
    occluder_density: multiplier of the number of cars and pedestrians (0 = none).
    supersample: rays per pixel along each axis (anti-aliasing; 1 is fastest).
    jpeg_quality: JPEG quality of the written images.
    seed: seed of everything random.
  """

  train_cities: tuple[str, ...] = ("synth_north", "synth_east", "synth_south")
  val_cities: tuple[str, ...] = ("synth_val",)
  image_height: int = 64
  image_width: int = 96
  streets_per_axis: tuple[int, int] = (3, 3)
  block_size_m: tuple[float, float] = (40.0, 62.0)
  frame_spacing_m: float = 4.5
  database_passes: int = 1
  query_sequences: int = 20
  train_query_sequences: int = 28
  panorama_fraction: float = 0.015
  camera_height_m: float = 2.5
  database_jitter: tuple[float, float, float, float] = (0.25, 2.0, 0.05, 1.0)
  query_jitter: tuple[float, float, float, float] = (0.6, 5.0, 0.2, 2.0)
  query_lane_shift_m: float = 1.5
  database_conditions: tuple[tuple[str, float], ...] = (
      ("sunny", 3.0), ("overcast", 3.0), ("autumn", 1.0), ("winter", 1.0), ("dusk", 1.0),
      ("night", 1.0), ("fog", 1.0))
  query_conditions: tuple[tuple[str, float], ...] = (
      ("sunny", 1.0), ("overcast", 1.0), ("autumn", 1.0), ("winter", 1.0), ("dusk", 1.0),
      ("night", 1.0), ("fog", 1.0))
  epochs: int = 3
  repaint_probability: float = 0.35
  occluder_density: float = 1.0
  supersample: int = 1
  jpeg_quality: int = 90
  seed: int = 0

  def __post_init__(self):
    # Accept lists (JSON, ml_collections) wherever tuples are expected.
    for f in ("train_cities", "val_cities", "streets_per_axis", "block_size_m", "database_jitter",
              "query_jitter"):
      v = getattr(self, f)
      if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
        raise TypeError(f"WorldConfig.{f} must be a sequence, got {v!r}")
      object.__setattr__(self, f, tuple(v))
    for f in ("database_conditions", "query_conditions"):
      v = getattr(self, f)
      if isinstance(v, Mapping):
        v = tuple(v.items())
      try:
        v = tuple((str(name), float(w)) for name, w in v)
      except (TypeError, ValueError):
        raise TypeError(f"WorldConfig.{f} must be (condition, weight) pairs, got {v!r}") from None
      object.__setattr__(self, f, v)
    self._validate_cities()
    self._validate_sizes()
    self._validate_ranges()

  def _validate_cities(self) -> None:
    cities = self.train_cities + self.val_cities
    if not cities:
      raise ValueError("WorldConfig: no cities (train_cities and val_cities are both empty)")
    for c in cities:
      if not isinstance(c, str) or not c or not c.replace("_", "").isalnum():
        raise ValueError(f"WorldConfig: city names must be non-empty [A-Za-z0-9_], got {c!r}")
      if c.lower() in _MSLS_CITY_NAMES:
        raise ValueError(f"WorldConfig: city name {c!r} is a real MSLS city; synthetic cities "
                         "need their own names (e.g. 'synth_north')")
    if len(set(cities)) != len(cities):
      raise ValueError(f"WorldConfig: duplicated city names in {cities}")

  def _validate_sizes(self) -> None:
    for f in ("image_height", "image_width", "supersample", "database_passes", "jpeg_quality",
              "epochs", "query_sequences", "train_query_sequences"):
      v = getattr(self, f)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"WorldConfig.{f} must be a positive integer, got {v!r}")
    if self.image_height < 8 or self.image_width < 8:
      raise ValueError(f"WorldConfig: images must be at least 8 x 8 pixels, got "
                       f"{self.image_height} x {self.image_width}")
    if self.jpeg_quality > 100:
      raise ValueError(f"WorldConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
    lo, hi = (self.streets_per_axis + (None, None))[:2]
    if len(self.streets_per_axis) != 2 or not 2 <= lo <= hi:
      raise ValueError(f"WorldConfig.streets_per_axis must be (min, max) with 2 <= min <= max, "
                       f"got {self.streets_per_axis}")
    if len(self.block_size_m) != 2 or not 30.0 <= self.block_size_m[0] <= self.block_size_m[1]:
      raise ValueError(f"WorldConfig.block_size_m must be (min, max) with 30 <= min <= max, got "
                       f"{self.block_size_m}")
    if not self.frame_spacing_m > 0:
      raise ValueError(f"WorldConfig.frame_spacing_m must be > 0, got {self.frame_spacing_m}")

  def _validate_ranges(self) -> None:
    for f, lo, hi in (("panorama_fraction", 0.0, 0.5), ("camera_height_m", 1.0, 6.0),
                      ("query_lane_shift_m", 0.0, 3.0), ("repaint_probability", 0.0, 1.0)):
      if not lo <= getattr(self, f) <= hi:
        raise ValueError(f"WorldConfig.{f} must be in [{lo:g}, {hi:g}], got {getattr(self, f)}")
    if not self.occluder_density >= 0:
      raise ValueError(f"WorldConfig.occluder_density must be >= 0, got {self.occluder_density}")
    for f in ("database_jitter", "query_jitter"):
      v = getattr(self, f)
      if len(v) != 4 or any(not x >= 0 for x in v):
        raise ValueError(f"WorldConfig.{f} must be 4 non-negative numbers (position m, heading "
                         f"deg, height m, pitch deg), got {v}")
    for f in ("database_conditions", "query_conditions"):
      pairs = getattr(self, f)
      if not pairs or sum(w for _, w in pairs) <= 0 or any(w < 0 for _, w in pairs):
        raise ValueError(f"WorldConfig.{f} needs non-negative weights with a positive sum, got "
                         f"{pairs}")
      for name, _ in pairs:
        if name not in CONDITIONS:
          raise ValueError(f"WorldConfig.{f}: unknown condition {name!r}; known: {CONDITIONS}")

  def to_json_dict(self) -> dict:
    """The config as plain JSON types (what world.json stores)."""
    return json.loads(json.dumps(dataclasses.asdict(self)))


# ---------------------------------------------------------------------------------------------
# Streets and cities
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Street:
  """A straight street from one end of the grid to the other.

  Attributes:
    axis: 0 for a street running north-south (x constant), 1 for east-west (y constant).
    coord: the constant coordinate of its centreline (x for axis 0, y for axis 1).
    start, end: extent of the drivable centreline along the street (start < end).
    road_half: half the curb-to-curb width.
    sidewalk: sidewalk width (facades stand at road_half + sidewalk from the centreline).
  """

  axis: int
  coord: float
  start: float
  end: float
  road_half: float
  sidewalk: float

  def point(self, along: float, lateral: float) -> tuple[float, float]:
    """World (x, y) of a point `along` the street and `lateral` to the east/north of it."""
    if self.axis == 0:
      return self.coord + lateral, along
    return along, self.coord + lateral

  @property
  def heading(self) -> float:
    """Compass heading of driving towards increasing `along` (0 = north, 90 = east)."""
    return 0.0 if self.axis == 0 else 90.0

  @property
  def length(self) -> float:
    return self.end - self.start


@dataclasses.dataclass
class City:
  """Static geometry and textures of one city (local metres: x east, y north)."""

  name: str
  origin: tuple[float, float]  # UTM (easting, northing) of local (0, 0).
  streets: list[Street]
  seg_p0: np.ndarray  # (S, 2) facade segment start
  seg_p1: np.ndarray  # (S, 2) facade segment end
  seg_col0: np.ndarray  # (S,) int64 first atlas column (level 0)
  seg_texw: np.ndarray  # (S,) int64 texture width (level 0 texels)
  seg_top: np.ndarray  # (S,) float64 highest opaque point of the facade (roof, chimneys)
  wall_tint: np.ndarray  # (epochs, S, 3) linear factor on wall albedo in each epoch
  sign_perm: np.ndarray  # (epochs, S) int8 RGB permutation (0..5) of shop signs per epoch
  atlas: paint.Atlas
  car_templates: list[tuple[int, int, int, float, float]]  # side, end, roof col0; length, width
  person_templates: list[tuple[int, int]]  # (col0, width)
  heightmap: np.ndarray  # (ny, nx) float32 building heights at 0.5 m
  hm_origin: tuple[float, float]
  hm_res: float
  cyl: np.ndarray  # (C, 6) cylinders: x, y, radius, z0, z1, kind (0 trunk, 1 pole, 2 lamp)
  crowns: np.ndarray  # (T, 6) tree crowns: x, y, radius, zc, half_height, tree id
  lamps: np.ndarray  # (M, 3) lamp head positions
  crossing: np.ndarray  # (nx_streets, ny_streets) bool: zebra crossings around intersection
  asphalt: np.ndarray  # (num streets,) float32 asphalt brightness per street
  bounds: tuple[float, float, float, float]  # (x0, y0, x1, y1) of the enclosing facade ring


def far_from_crossings(a: float, st: Street, streets: list[Street]) -> bool:
  """Whether `along` position a on street st is clear of the cross streets (plus 3 m)."""
  for o in streets:
    if o.axis != st.axis and abs(a - o.coord) < o.road_half + o.sidewalk + 3.0:
      return False
  return True


@dataclasses.dataclass(frozen=True)
class _Grid:
  """A city's street grid: centrelines and half widths (road + sidewalk) of both directions."""

  xs: np.ndarray  # x of the north-south streets
  ys: np.ndarray  # y of the east-west streets
  hw_v: np.ndarray
  hw_h: np.ndarray
  streets: list[Street]

  @property
  def inner(self) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the facade ring enclosing the grid."""
    return (self.xs[0] - self.hw_v[0], self.ys[0] - self.hw_h[0], self.xs[-1] + self.hw_v[-1],
            self.ys[-1] + self.hw_h[-1])


def _street_grid(config: WorldConfig, rng: np.random.Generator) -> _Grid:
  """Draws the number, spacing and widths of a city's streets."""
  lo, hi = config.streets_per_axis
  n_v = int(rng.integers(lo, hi + 1))
  n_h = int(rng.integers(lo, hi + 1))
  road = rng.choice([5.0, 5.5, 6.0, 7.0], size=n_v + n_h)
  side = rng.uniform(2.2, 3.8, size=n_v + n_h)
  off = rng.uniform(*config.block_size_m, size=n_v - 1)
  xs = np.concatenate([[0.0], np.cumsum(off)])
  off = rng.uniform(*config.block_size_m, size=n_h - 1)
  ys = np.concatenate([[0.0], np.cumsum(off)])
  streets = []
  for i in range(n_v):
    streets.append(Street(0, float(xs[i]), float(ys[0]), float(ys[-1]), float(road[i]),
                          float(side[i])))
  for j in range(n_h):
    streets.append(Street(1, float(ys[j]), float(xs[0]), float(xs[-1]), float(road[n_v + j]),
                          float(side[n_v + j])))
  return _Grid(xs=xs, ys=ys, hw_v=road[:n_v] + side[:n_v], hw_h=road[n_v:] + side[n_v:],
               streets=streets)


def _block_edges(g: _Grid) -> list[tuple[tuple, tuple, tuple]]:
  """Street-facing edges (p0, p1, inward normal): inner blocks (4 edges), outer ring (1 edge)."""
  xs, ys, hw_v, hw_h = g.xs, g.ys, g.hw_v, g.hw_h
  x_in0, y_in0, x_in1, y_in1 = g.inner
  edges = []
  for i in range(len(xs) - 1):
    for j in range(len(ys) - 1):
      bx0, bx1 = xs[i] + hw_v[i], xs[i + 1] - hw_v[i + 1]
      by0, by1 = ys[j] + hw_h[j], ys[j + 1] - hw_h[j + 1]
      edges += [((bx0, by0), (bx1, by0), (0, 1)), ((bx1, by1), (bx0, by1), (0, -1)),
                ((bx0, by1), (bx0, by0), (1, 0)), ((bx1, by0), (bx1, by1), (-1, 0))]
  edges += [((x_in0, y_in0), (x_in1, y_in0), (0, -1)), ((x_in1, y_in1), (x_in0, y_in1), (0, 1)),
            ((x_in0, y_in1), (x_in0, y_in0), (-1, 0)), ((x_in1, y_in0), (x_in1, y_in1), (1, 0))]
  return edges


@dataclasses.dataclass
class _Facades:
  """The buildings along the block edges: one canvas and footprint per building."""

  canvases: list = dataclasses.field(default_factory=list)
  p0s: list = dataclasses.field(default_factory=list)
  p1s: list = dataclasses.field(default_factory=list)
  heights: list = dataclasses.field(default_factory=list)  # Highest points.
  depths: list = dataclasses.field(default_factory=list)  # (inward normal, depth) of footprints.
  walls: list = dataclasses.field(default_factory=list)  # Wall colours.


def _paint_facades(rng: np.random.Generator, edges: list) -> _Facades:
  """Splits every edge into buildings 6-22 m wide and paints them."""
  fac = _Facades()
  next_wid = 1
  for (a, b, nrm) in edges:
    a, b = np.array(a, float), np.array(b, float)
    length = float(np.linalg.norm(b - a))
    u = (b - a) / length
    s = 0.0
    while s < length - 1e-6:
      w = float(rng.uniform(6.0, 22.0))
      if length - (s + w) < 6.0:
        w = length - s
      cv, next_wid, top, wall = paint.paint_building(rng, w, next_wid, paint.ATLAS_HEIGHT_PX)
      fac.canvases.append(cv)
      fac.walls.append(wall)
      fac.p0s.append(a + u * s)
      fac.p1s.append(a + u * (s + w))
      fac.heights.append(top)
      fac.depths.append((np.array(nrm, float), float(rng.uniform(8.0, 16.0))))
      s += w
  return fac


def _paint_transient_templates(rng: np.random.Generator) -> tuple[list, list[tuple[float, float]]]:
  """Canvases of 12 cars (side, end and roof each) and 10 pedestrians, and the cars' sizes."""
  canvases, car_specs = [], []
  height_px = paint.ATLAS_HEIGHT_PX
  for k in range(12):
    kind = k % 4
    length, width, height = ((4.3, 1.8, 1.5) if kind < 2 else (4.7, 1.9, 1.6) if kind == 2 else
                             (5.2, 2.0, 2.3))
    colour = paint.jitter_colour(rng, paint.CAR_COLOURS[rng.integers(len(paint.CAR_COLOURS))],
                                 0.03)
    canvases.append(paint.paint_car(length, height, colour, True, False, height_px))
    canvases.append(paint.paint_car(width, height, colour, False, k % 2 == 0, height_px))
    roof = paint.Canvas(length, height_px)
    roof.rect(0.0, height, 0.0, length, np.clip(colour * 1.05, 0, 1), paint.M_CAR)
    canvases.append(roof)
    car_specs.append((length, width))
  for _ in range(10):
    canvases.append(paint.paint_person(rng, height_px))
  return canvases, car_specs


def _height_map(fac: _Facades, g: _Grid, band: float = 25.0,
                res: float = 0.5) -> tuple[np.ndarray, tuple[float, float]]:
  """Height map of the building footprints (for cast shadows) and its origin."""
  x_in0, y_in0, x_in1, y_in1 = g.inner
  bx0, by0 = x_in0 - band, y_in0 - band
  bx1, by1 = x_in1 + band, y_in1 + band
  nx = int(math.ceil((bx1 - bx0) / res))
  ny = int(math.ceil((by1 - by0) / res))
  hm = np.zeros((ny, nx), np.float32)
  for p, q, top, (nrm, depth) in zip(fac.p0s, fac.p1s, fac.heights, fac.depths):
    r0 = np.minimum(p, q)
    r1 = np.maximum(p, q)
    far = np.array([p, q]) + nrm * depth
    r0 = np.minimum(r0, far.min(0))
    r1 = np.maximum(r1, far.max(0))
    i0, i1 = int((r0[0] - bx0) / res), int(math.ceil((r1[0] - bx0) / res))
    j0, j1 = int((r0[1] - by0) / res), int(math.ceil((r1[1] - by0) / res))
    # Shrink by a cell on the street side so facade points are not inside their own footprint.
    i0, i1 = i0 + int(nrm[0] > 0), i1 - int(nrm[0] < 0)
    j0, j1 = j0 + int(nrm[1] > 0), j1 - int(nrm[1] < 0)
    hm[j0:j1, i0:i1] = np.maximum(hm[j0:j1, i0:i1], top)
  return hm, (bx0, by0)


def _plant_trees(rng: np.random.Generator, st: Street, streets: list[Street], cyl: list,
                 crowns: list) -> None:
  """Rows of trees (trunk cylinders and crowns) on either sidewalk of `st`, each with p = 0.5."""
  for sgn in (-1.0, 1.0):
    if rng.random() < 0.5:
      spacing = float(rng.uniform(7.0, 12.0))
      r = float(rng.uniform(1.4, 2.6))
      zc = float(rng.uniform(4.0, 6.0))
      hz = float(rng.uniform(1.3, 2.4))
      a = st.start + float(rng.uniform(0, spacing))
      while a < st.end:
        lat = sgn * (st.road_half + 0.8)
        if far_from_crossings(a, st, streets):
          x, y = st.point(a, lat)
          rj = r * rng.uniform(0.85, 1.15)
          cyl.append((x, y, float(rng.uniform(0.12, 0.22)), 0.0, zc - hz * 0.3, 0))
          crowns.append((x, y, rj, zc, hz * rng.uniform(0.9, 1.1), len(crowns)))
        a += spacing * rng.uniform(0.8, 1.2)


def _street_furniture(rng: np.random.Generator,
                      streets: list[Street]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Trees and lamp posts along the sidewalks: (cylinders, crowns, lamp heads)."""
  cyl, crowns, lamps = [], [], []
  for st in streets:
    _plant_trees(rng, st, streets, cyl, crowns)
    spacing = float(rng.uniform(22.0, 32.0))
    a = st.start + float(rng.uniform(0, spacing))
    k = 0
    while a < st.end:
      sgn = 1.0 if k % 2 == 0 else -1.0
      if far_from_crossings(a, st, streets):
        x, y = st.point(a, sgn * (st.road_half + 0.35))
        hz = float(rng.uniform(6.0, 7.5))
        cyl.append((x, y, 0.09, 0.0, hz, 1))
        hx, hy = st.point(a, sgn * (st.road_half - 0.9))
        cyl.append((hx, hy, 0.3, hz - 0.25, hz, 2))
        lamps.append((hx, hy, hz - 0.3))
      a += spacing
      k += 1
  return (np.array(cyl, np.float64).reshape(-1, 6), np.array(crowns, np.float64).reshape(-1, 6),
          np.array(lamps, np.float64).reshape(-1, 3))


def _shade_crowns(hm: np.ndarray, origin: tuple[float, float], res: float,
                  crowns: np.ndarray) -> None:
  """Raises the height map under tree crowns (crowns shade the ground too)."""
  bx0, by0 = origin
  for (x, y, r, zc, hz, _) in crowns:
    i0, i1 = int((x - r - bx0) / res), int(math.ceil((x + r - bx0) / res))
    j0, j1 = int((y - r - by0) / res), int(math.ceil((y + r - by0) / res))
    hm[j0:j1, i0:i1] = np.maximum(hm[j0:j1, i0:i1], zc + hz)


def _repaint_tables(config: WorldConfig, name: str,
                    walls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Wall tints (epochs, S, 3) and sign channel permutations (epochs, S) per epoch.

  In every epoch some buildings have another wall colour and some shops another sign colour (a
  channel permutation); epoch 0 is the painted atlas.
  """
  prng = seeded_rng(config.seed, "repaint", name)
  walls = np.array(walls, np.float32)
  n_fac = len(walls)
  tint = np.ones((config.epochs, n_fac, 3), np.float32)
  sign_perm = np.zeros((config.epochs, n_fac), np.int8)
  for e in range(1, config.epochs):
    new = paint.WALL_COLOURS[prng.integers(len(paint.WALL_COLOURS), size=n_fac)]
    new = np.clip(new * prng.uniform(0.9, 1.1, (n_fac, 1)), 0.05, 1.0)
    rep = prng.random(n_fac) < config.repaint_probability
    tint[e, rep] = (new[rep] / np.maximum(walls[rep], 0.05)) ** 2.2
    sign_perm[e] = np.where(prng.random(n_fac) < config.repaint_probability,
                            prng.integers(1, 6, n_fac), 0)
  return tint, sign_perm


def _city_origin(config: WorldConfig, name: str) -> tuple[float, float]:
  """UTM origin of a city: cities sit 5 km apart in one UTM zone, in config order."""
  cities = config.train_cities + config.val_cities
  k = cities.index(name) if name in cities else len(cities)
  return (UTM_ORIGIN[0] - 20_000.0 + 5_000.0 * (k % 9), UTM_ORIGIN[1] + 5_000.0 * (k // 9))


def build_city(config: WorldConfig, name: str) -> City:
  """Builds the street grid, buildings, facade atlas, trees and lamps of one city."""
  rng = seeded_rng(config.seed, "city", name)
  g = _street_grid(config, rng)
  fac = _paint_facades(rng, _block_edges(g))
  n_fac = len(fac.canvases)
  extra, car_specs = _paint_transient_templates(rng)  # Cars and pedestrians share the atlas.
  canvases = fac.canvases + extra
  atlas, col0 = paint.pack_atlas(canvases)
  car_templates = []
  for k, (length, width) in enumerate(car_specs):
    i = n_fac + 3 * k
    car_templates.append((int(col0[i]), int(col0[i + 1]), int(col0[i + 2]), length, width))
  first_person = n_fac + 3 * len(car_specs)
  person_templates = [(int(col0[i]), canvases[i].w) for i in range(first_person, len(canvases))]
  seg_texw = np.array([int(math.ceil(np.linalg.norm(q - p) * paint.PPM))
                       for p, q in zip(fac.p0s, fac.p1s)], np.int64)
  res = 0.5
  hm, hm_origin = _height_map(fac, g, res=res)
  cyl, crowns, lamps = _street_furniture(rng, g.streets)
  _shade_crowns(hm, hm_origin, res, crowns)
  tint, sign_perm = _repaint_tables(config, name, fac.walls)
  return City(
      name=name, origin=_city_origin(config, name), streets=g.streets,
      seg_p0=np.array(fac.p0s, np.float64), seg_p1=np.array(fac.p1s, np.float64),
      seg_col0=col0[:n_fac].copy(), seg_texw=seg_texw,
      seg_top=np.array(fac.heights, np.float64) + 0.5, wall_tint=tint, sign_perm=sign_perm,
      atlas=atlas, car_templates=car_templates,
      person_templates=person_templates, heightmap=hm, hm_origin=hm_origin, hm_res=res,
      cyl=cyl, crowns=crowns, lamps=lamps,
      crossing=rng.random((len(g.xs), len(g.ys))) < 0.6,
      asphalt=rng.uniform(0.75, 1.2, len(g.streets)).astype(np.float32),
      bounds=tuple(float(v) for v in g.inner))


# ---------------------------------------------------------------------------------------------
# Traversals and cameras
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Camera:
  """A camera pose in local city metres.

  Attributes:
    x, y: position (east, north).
    heading_deg: compass heading of the optical axis (clockwise from north).
    height_m: height above the road.
    pitch_deg: upward tilt (a shift of the principal point).
    panorama: render a 360 degree cylindrical panorama centred on `heading_deg`.
  """

  x: float
  y: float
  heading_deg: float
  height_m: float = 2.5
  pitch_deg: float = 0.0
  panorama: bool = False


@dataclasses.dataclass
class Traversal:
  """One drive along a street: its frames, camera direction and appearance condition."""

  side: str  # "query" or "database"
  street: int
  drive_sign: int  # +1 along increasing `along`, -1 decreasing
  view: str  # "Forward", "Backward", "Sideways"
  view_offset: float  # heading offset from the driving direction (0, 180, +-90)
  lateral: float  # lane centre, metres east/north of the street centreline
  along: np.ndarray  # frame positions along the street
  condition: str
  panorama: bool = False


def _pick(rng: np.random.Generator, pairs: tuple[tuple[str, float], ...]) -> str:
  """A condition drawn from (condition, weight) pairs."""
  names = [n for n, _ in pairs]
  w = np.array([w for _, w in pairs], float)
  return names[int(rng.choice(len(names), p=w / w.sum()))]


def _frames(rng: np.random.Generator, a0: float, a1: float, sign: int,
            spacing: float) -> np.ndarray:
  """Frame positions every `spacing` metres in [a0, a1), random phase, in driving order."""
  phase = rng.uniform(0, spacing)
  a = np.arange(a0 + phase, a1, spacing)
  return a if sign > 0 else a[::-1]


def _lane(rng: np.random.Generator, st: Street, sign: int) -> float:
  """A random lane centre for driving direction `sign` (right-hand traffic)."""
  # The lane is right of the driving direction; right of +along is +x/-y for N-S/E-W streets.
  right = 1.0 if st.axis == 0 else -1.0
  off = rng.uniform(1.3, max(1.35, st.road_half - 3.3))
  return sign * right * off


def _view_for(rng: np.random.Generator, st: Street, target: str) -> tuple[int, str, float]:
  """Driving sign, view name and heading offset that look along `target`.

  `target` is 'inc'/'dec' (along the street) or 'left_side'/'right_side' (facing the -/+ lateral
  side).
  """
  if target in ("inc", "dec"):
    want = 1 if target == "inc" else -1
    if rng.random() < 0.8:
      return want, "Forward", 0.0
    return -want, "Backward", 180.0
  sign = 1 if rng.random() < 0.5 else -1
  # Heading offset +90 looks right of the driving direction.
  right_side_lat = (1.0 if st.axis == 0 else -1.0) * sign  # lateral sign seen by +90
  want_lat = 1.0 if target == "right_side" else -1.0
  return sign, "Sideways", 90.0 if right_side_lat == want_lat else -90.0


def _plan_database(config: WorldConfig, city: City, rng: np.random.Generator) -> list[Traversal]:
  """Full database coverage (every street, 4 headings, each pass), then extra panoramas."""
  sp = config.frame_spacing_m
  seqs = []
  for _ in range(config.database_passes):
    for si, st in enumerate(city.streets):
      for target in ("inc", "dec", "left_side", "right_side"):
        sign, view, voff = _view_for(rng, st, target)
        seqs.append(Traversal("database", si, sign, view, voff, _lane(rng, st, sign),
                              _frames(rng, st.start, st.end, sign, sp),
                              _pick(rng, config.database_conditions)))
  n_pano = int(round(config.panorama_fraction * sum(len(s.along) for s in seqs)))
  while n_pano > 0:
    si = int(rng.integers(len(city.streets)))
    st = city.streets[si]
    sign = 1 if rng.random() < 0.5 else -1
    a = _frames(rng, st.start, st.end, sign, 2 * sp)[:n_pano]
    seqs.append(Traversal("database", si, sign, "Forward", 0.0, _lane(rng, st, sign), a,
                          _pick(rng, config.database_conditions), panorama=True))
    n_pano -= len(a)
  return seqs


def _plan_queries(config: WorldConfig, city: City, rng: np.random.Generator) -> list[Traversal]:
  """Query traversals: random stretches (25-55 %) of random streets, random headings."""
  n_query = (config.train_query_sequences if city.name in config.train_cities else
             config.query_sequences)
  seqs = []
  for _ in range(n_query):
    si = int(rng.integers(len(city.streets)))
    st = city.streets[si]
    target = rng.choice(["inc", "dec", "left_side", "right_side"], p=[0.33, 0.33, 0.17, 0.17])
    sign, view, voff = _view_for(rng, st, str(target))
    frac = rng.uniform(0.25, 0.55)
    a0 = st.start + rng.uniform(0, 1 - frac) * st.length
    lat = _lane(rng, st, sign) + rng.uniform(-config.query_lane_shift_m, config.query_lane_shift_m)
    lat = float(np.clip(lat, -(st.road_half - 3.1), st.road_half - 3.1))
    seqs.append(Traversal("query", si, sign, view, voff, lat,
                          _frames(rng, a0, a0 + frac * st.length, sign, config.frame_spacing_m),
                          _pick(rng, config.query_conditions)))
  return seqs


def plan_city(config: WorldConfig, city: City) -> list[Traversal]:
  """The traversals of one city (database first, then queries)."""
  rng = seeded_rng(config.seed, "plan", city.name)
  return _plan_database(config, city, rng) + _plan_queries(config, city, rng)


def traversal_cameras(config: WorldConfig, city: City, seq: Traversal,
                      rng: np.random.Generator) -> list[Camera]:
  """The camera of every frame of `seq`: a smooth lateral wander plus per-frame pose noise."""
  st = city.streets[seq.street]
  jit = config.query_jitter if seq.side == "query" else config.database_jitter
  drive = st.heading + (0.0 if seq.drive_sign > 0 else 180.0)
  cams = []
  n = len(seq.along)
  wander = np.cumsum(rng.normal(0, jit[0] * 0.3, n))
  wander -= wander.mean()
  for k, a in enumerate(seq.along):
    lat = seq.lateral + np.clip(wander[k], -jit[0] * 2, jit[0] * 2) + rng.normal(0, jit[0] * 0.3)
    lat = float(np.clip(lat, -(st.road_half - 2.9), st.road_half - 2.9))
    a = float(a + rng.normal(0, jit[0] * 0.5))
    x, y = st.point(a, lat)
    cams.append(Camera(
        x=float(x), y=float(y),
        heading_deg=float((drive + seq.view_offset + rng.normal(0, jit[1])) % 360.0),
        height_m=float(config.camera_height_m + rng.normal(0, jit[2])),
        pitch_deg=float(rng.normal(0, jit[3])), panorama=seq.panorama))
  return cams

"""A procedural street world written in the MSLS on-disk layout (demo data and tests).

Each city is a rectangular street grid closed by a ring of buildings. Every block edge is lined
with buildings whose facades are painted procedurally and distinctively (window grids of
different sizes and spacings, doors, shop fronts with signs and awnings, string courses,
balconies, pilasters, roof lines, chimneys, glass towers), streets have lane markings,
crossings, curbs, trees and lamp posts. Images are ray cast with a real pinhole camera (90 degree
horizontal field of view, 2.5 m above the road): one ray per column against all facade segments,
rows mapped to heights, a ground plane below and the sky above.

Database and query traversals drive along the streets with forward, backward and sideways
cameras. Place identity lives in the STRUCTURE (which facade, which windows, which roof line);
appearance changes between traversals: every sequence has its own condition (sunny with cast
shadows, overcast, autumn, winter with snow, dusk, night with lit windows and street lamps, fog),
its own camera response (exposure, white balance, gamma, saturation, noise) and its own
transient occluders (parked and moving cars, pedestrians). Queries also differ in lane, frame
phase and pose jitter.

    root/world.json                                   config + sizes; written last
    root/train_val/<city>/{query,database}/images/<key>.jpg
    root/train_val/<city>/{query,database}/{raw,postprocessed,seq_info,subtask_index}.csv

The default world has ~3,000 images of 64 x 96 pixels (three training cities of ~700 images,
a validation city of ~175 queries and ~540 database images) and takes ~25 s of one CPU core.
On its validation city raw 8 x 12 colour thumbnails reach ~17 % Recall@1 (chance ~12 %) while a
hand-made gradient-orientation descriptor reaches ~33 % (`world_stats`).

Usage:
    root = generate_world("/tmp/world", WorldConfig(**overrides))
    q, db = gcl_jax.data.msls.read_msls_city(root, "synth_val")
    python -m gcl_jax.data.synthetic /tmp/world     # generate and print world_stats

Everything is a deterministic function of the WorldConfig (and the numpy/Pillow versions).
This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

FORMAT_VERSION = 1

# The MSLS city names (mirrors gcl_jax.data.msls, which is not imported here because it loads
# TensorFlow; tests check that the two agree). Synthetic cities must not reuse them.
_MSLS_CITY_NAMES = frozenset((
    "trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo", "toronto",
    "saopaulo", "moscow", "zurich", "paris", "bangkok", "budapest", "austin", "berlin", "ottawa",
    "phoenix", "goa", "amman", "nairobi", "manila", "cph", "sf", "miami", "athens", "buenosaires",
    "stockholm", "bengaluru", "kampala", "toy"))

CONDITIONS = ("sunny", "overcast", "autumn", "winter", "dusk", "night", "fog")
"""Appearance conditions a traversal can have (see `make_condition`)."""

_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_PPM = 8.0  # Facade texels per metre at mip level 0.
_LEVELS = 4  # Mip levels of the facade atlas (8, 4, 2, 1 texels per metre).
_ATLAS_HEIGHT_M = 40.0  # Height of the facade atlas strip (tallest building incl. roof).
_UTM_ZONE = 32
_UTM_ORIGIN = (500_000.0, 5_500_000.0)  # City offsets are added to this (zone 32 north).
_NEAR = 0.25  # Near clipping distance of the camera (metres).


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
    self._validate()

  def _validate(self) -> None:
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
    for f in ("image_height", "image_width", "supersample", "database_passes", "jpeg_quality",
              "epochs"):
      v = getattr(self, f)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"WorldConfig.{f} must be a positive integer, got {v!r}")
    if self.image_height < 8 or self.image_width < 8:
      raise ValueError(f"WorldConfig: images must be at least 8 x 8 pixels, got "
                       f"{self.image_height} x {self.image_width}")
    if self.jpeg_quality > 100:
      raise ValueError(f"WorldConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
    for f in ("query_sequences", "train_query_sequences"):
      v = getattr(self, f)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"WorldConfig.{f} must be a positive integer, got {v!r}")
    lo, hi = (self.streets_per_axis + (None, None))[:2]
    if len(self.streets_per_axis) != 2 or not 2 <= lo <= hi:
      raise ValueError(f"WorldConfig.streets_per_axis must be (min, max) with 2 <= min <= max, "
                       f"got {self.streets_per_axis}")
    if len(self.block_size_m) != 2 or not 30.0 <= self.block_size_m[0] <= self.block_size_m[1]:
      raise ValueError(f"WorldConfig.block_size_m must be (min, max) with 30 <= min <= max, got "
                       f"{self.block_size_m}")
    if not self.frame_spacing_m > 0:
      raise ValueError(f"WorldConfig.frame_spacing_m must be > 0, got {self.frame_spacing_m}")
    if not 0.0 <= self.panorama_fraction <= 0.5:
      raise ValueError(f"WorldConfig.panorama_fraction must be in [0, 0.5], got "
                       f"{self.panorama_fraction}")
    if not 1.0 <= self.camera_height_m <= 6.0:
      raise ValueError(f"WorldConfig.camera_height_m must be in [1, 6], got {self.camera_height_m}")
    for f in ("database_jitter", "query_jitter"):
      v = getattr(self, f)
      if len(v) != 4 or any(not x >= 0 for x in v):
        raise ValueError(f"WorldConfig.{f} must be 4 non-negative numbers (position m, heading "
                         f"deg, height m, pitch deg), got {v}")
    if not 0.0 <= self.query_lane_shift_m <= 3.0:
      raise ValueError(f"WorldConfig.query_lane_shift_m must be in [0, 3], got "
                       f"{self.query_lane_shift_m}")
    if not 0.0 <= self.repaint_probability <= 1.0:
      raise ValueError(f"WorldConfig.repaint_probability must be in [0, 1], got "
                       f"{self.repaint_probability}")
    if not self.occluder_density >= 0:
      raise ValueError(f"WorldConfig.occluder_density must be >= 0, got {self.occluder_density}")
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


def _rng(*parts: int | str) -> np.random.Generator:
  """A generator seeded by a tuple of ints and strings (strings via CRC32, not hash())."""
  words = [p if isinstance(p, (int, np.integer)) else zlib.crc32(str(p).encode()) for p in parts]
  return np.random.default_rng(np.random.SeedSequence([int(w) % (2 ** 32) for w in words]))


def _random_keys(rng: np.random.Generator, n: int, length: int = 22) -> list[str]:
  idx = rng.integers(0, len(_ALPHABET), size=(n, length))
  return ["".join(row) for row in _ALPHABET[idx]]


# ---------------------------------------------------------------------------------------------
# Noise textures
# ---------------------------------------------------------------------------------------------

_NOISE_CACHE: dict[int, np.ndarray] = {}


def _noise(scale: int) -> np.ndarray:
  """A tileable 256 x 256 smooth noise texture in [0, 1] (Gaussian-filtered white noise)."""
  if scale not in _NOISE_CACHE:
    rng = _rng(1234, "noise", scale)
    white = rng.standard_normal((256, 256))
    fy = np.fft.fftfreq(256)[:, None]
    fx = np.fft.fftfreq(256)[None, :]
    kernel = np.exp(-2 * (math.pi * scale) ** 2 * (fx ** 2 + fy ** 2))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(white) * kernel))
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-9)
    _NOISE_CACHE[scale] = np.clip(0.5 + 0.18 * smooth, 0.0, 1.0).astype(np.float32)
  return _NOISE_CACHE[scale]


def _sample_noise(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Nearest-neighbour lookup of a tileable texture at real-valued texel coordinates."""
  rows = np.floor(v).astype(np.int64) % tex.shape[0]
  return tex[rows, np.floor(u).astype(np.int64) % tex.shape[1]]


def _hash01(a: np.ndarray, seed: int) -> np.ndarray:
  """A deterministic hash of integers to [0, 1)."""
  x = (np.asarray(a, np.uint64) * np.uint64(2654435761) + np.uint64(seed % (2 ** 31)) *
       np.uint64(40503) + np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(16)
  x = (x * np.uint64(0x45D9F3B)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(16)
  x = (x * np.uint64(0x45D9F3B)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(16)
  return (x.astype(np.float64) / 2.0 ** 32).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Facade textures
# ---------------------------------------------------------------------------------------------

# Material codes of atlas texels.
_M_WALL, _M_GLASS, _M_FRAME, _M_DOOR, _M_SIGN, _M_AWNING, _M_ROOF, _M_BALCONY = range(8)
_M_CAR, _M_CARGLASS, _M_TYRE, _M_TAIL, _M_HEAD, _M_PERSON = range(8, 14)

_WALL_COLOURS = np.array([
    (0.80, 0.72, 0.58), (0.88, 0.84, 0.72), (0.62, 0.33, 0.25), (0.47, 0.27, 0.21),
    (0.60, 0.60, 0.60), (0.90, 0.89, 0.86), (0.80, 0.62, 0.35), (0.65, 0.72, 0.60),
    (0.62, 0.70, 0.78), (0.82, 0.64, 0.62), (0.36, 0.37, 0.39), (0.52, 0.42, 0.32),
    (0.74, 0.70, 0.66), (0.70, 0.52, 0.40)], np.float32)
_ACCENT_COLOURS = np.array([
    (0.95, 0.94, 0.90), (0.25, 0.25, 0.27), (0.55, 0.50, 0.45), (0.75, 0.70, 0.60),
    (0.40, 0.22, 0.18), (0.30, 0.40, 0.35)], np.float32)
_SIGN_COLOURS = np.array([
    (0.80, 0.10, 0.10), (0.10, 0.25, 0.70), (0.10, 0.55, 0.25), (0.95, 0.80, 0.10),
    (0.08, 0.08, 0.08), (0.95, 0.95, 0.95), (0.60, 0.15, 0.55), (0.95, 0.45, 0.05)], np.float32)
_ROOF_COLOURS = np.array([
    (0.60, 0.27, 0.18), (0.30, 0.30, 0.33), (0.42, 0.30, 0.24), (0.22, 0.30, 0.30)], np.float32)
_CAR_COLOURS = np.array([
    (0.85, 0.85, 0.85), (0.1, 0.1, 0.1), (0.5, 0.5, 0.52), (0.7, 0.1, 0.1), (0.1, 0.2, 0.5),
    (0.9, 0.9, 0.92), (0.2, 0.35, 0.25), (0.6, 0.55, 0.4), (0.95, 0.75, 0.1)], np.float32)


class _Canvas:
  """One facade texture being painted, in texels at _PPM (row 0 = ground level)."""

  def __init__(self, width_m: float, height_px: int):
    self.w = max(8, int(math.ceil(width_m * _PPM)))
    self.w += (-self.w) % (2 ** (_LEVELS - 1))
    self.h = height_px
    self.width_m = width_m
    self.rgb = np.zeros((self.h, self.w, 3), np.float32)
    self.glass = np.zeros((self.h, self.w), np.float32)
    self.snow = np.zeros((self.h, self.w), np.float32)
    self.mat = np.zeros((self.h, self.w), np.uint8)
    self.wid = np.zeros((self.h, self.w), np.int32)
    self.alpha = np.zeros((self.h, self.w), bool)

  def sl(self, z0: float, z1: float, s0: float, s1: float) -> tuple[slice, slice]:
    r0 = int(np.clip(round(z0 * _PPM), 0, self.h))
    r1 = int(np.clip(round(z1 * _PPM), r0, self.h))
    c0 = int(np.clip(round(s0 * _PPM), 0, self.w))
    c1 = int(np.clip(round(s1 * _PPM), c0, self.w))
    return slice(r0, r1), slice(c0, c1)

  def rect(self, z0, z1, s0, s1, colour, mat, *, glass=0.0, wid=0, snow_top=False,
           alpha=True) -> None:
    rs, cs = self.sl(z0, z1, s0, s1)
    self.rgb[rs, cs] = colour
    self.mat[rs, cs] = mat
    self.glass[rs, cs] = glass
    self.wid[rs, cs] = wid
    self.snow[rs, cs] = 0.0
    if alpha:
      self.alpha[rs, cs] = True
    if snow_top and rs.stop > rs.start:
      self.snow[rs.stop - 1, cs] = 1.0


def _jitter_colour(rng: np.random.Generator, c: np.ndarray, amount: float = 0.06) -> np.ndarray:
  return np.clip(c * (1.0 + rng.uniform(-amount, amount)) + rng.uniform(-amount, amount, 3) * 0.5,
                 0.0, 1.0).astype(np.float32)


def _paint_window(cv: _Canvas, rng_w: dict, z0: float, s0: float, w: float, h: float, wid: int,
                  rng: np.random.Generator) -> None:
  """A window with frame, optional mullions, shutters, arch and sill."""
  st = rng_w
  ft = st["frame_t"]
  if st["shutters"]:
    cv.rect(z0, z0 + h, s0 - w * 0.45, s0, st["shutter_colour"], _M_FRAME)
    cv.rect(z0, z0 + h, s0 + w, s0 + w * 1.45, st["shutter_colour"], _M_FRAME)
  cv.rect(z0, z0 + h, s0, s0 + w, st["frame_colour"], _M_FRAME)
  glass_colour = np.clip(st["glass_colour"] * rng.uniform(0.8, 1.25), 0, 1)
  if rng.random() < st["blind_prob"]:  # Blinds half-down (structural, same in every traversal).
    cut = z0 + ft + (h - 2 * ft) * rng.uniform(0.35, 0.8)
    cv.rect(z0 + ft, cut, s0 + ft, s0 + w - ft, glass_colour, _M_GLASS, glass=1.0, wid=wid)
    cv.rect(cut, z0 + h - ft, s0 + ft, s0 + w - ft, st["blind_colour"], _M_GLASS, glass=0.5,
            wid=wid)
  else:
    cv.rect(z0 + ft, z0 + h - ft, s0 + ft, s0 + w - ft, glass_colour, _M_GLASS, glass=1.0, wid=wid)
  if st["mullion"]:
    cv.rect(z0, z0 + h, s0 + w / 2 - ft / 2, s0 + w / 2 + ft / 2, st["frame_colour"], _M_FRAME)
    if st["transom"]:
      zt = z0 + h * 0.7
      cv.rect(zt - ft / 2, zt + ft / 2, s0, s0 + w, st["frame_colour"], _M_FRAME)
  if st["arch"]:  # Round the top corners with wall colour.
    rs, cs = cv.sl(z0 + h - w / 2, z0 + h, s0, s0 + w)
    if rs.stop > rs.start and cs.stop > cs.start:
      zz = (np.arange(rs.start, rs.stop) + 0.5) / _PPM - (z0 + h - w / 2)
      ss = (np.arange(cs.start, cs.stop) + 0.5) / _PPM - (s0 + w / 2)
      out = (zz[:, None] ** 2 + ss[None, :] ** 2) > (w / 2) ** 2
      sub = (rs, cs)
      cv.rgb[sub][out] = st["wall"]
      cv.mat[sub][out] = _M_WALL
      cv.glass[sub][out] = 0.0
      cv.wid[sub][out] = 0
  if st["sill"]:
    cv.rect(z0 - 0.12, z0, s0 - 0.1, s0 + w + 0.1, st["accent"], _M_FRAME, snow_top=True)


def _paint_building(rng: np.random.Generator, width_m: float, next_wid: int,
                    height_px: int) -> tuple[_Canvas, int, float, np.ndarray]:
  """Paints one building facade.

  Returns:
    (canvas, next free window id, highest point in metres, wall colour).
  """
  cv = _Canvas(width_m, height_px)
  style = rng.choice(["classic", "brick", "modern", "shops", "tower"],
                     p=[0.3, 0.2, 0.2, 0.2, 0.1])
  floors = int(rng.integers(2, 9)) if style != "tower" else int(rng.integers(6, 10))
  floor_h = float(rng.uniform(2.9, 3.6))
  ground_h = float(rng.uniform(3.3, 4.8))
  top = ground_h + (floors - 1) * floor_h
  parapet = float(rng.uniform(0.3, 1.4))
  height = min(top + parapet, _ATLAS_HEIGHT_M - 6.0)
  wall = _jitter_colour(rng, _WALL_COLOURS[rng.integers(len(_WALL_COLOURS))])
  if style == "brick":
    wall = _jitter_colour(rng, _WALL_COLOURS[rng.choice([2, 3, 11, 13])])
  accent = _jitter_colour(rng, _ACCENT_COLOURS[rng.integers(len(_ACCENT_COLOURS))])
  # Wall with large-scale material variation.
  cv.rect(0.0, height, 0.0, width_m, wall, _M_WALL)
  noise = _noise(6)
  ou, ov = rng.integers(0, 256, 2)
  rr = np.arange(cv.h)[:, None] + ov
  cc = np.arange(cv.w)[None, :] + ou
  cv.rgb *= (0.9 + 0.2 * noise[rr % 256, cc % 256])[..., None]
  if style == "brick":  # Mortar courses every 2 texels (0.25 m), averaged away at distance.
    cv.rgb[1::2] *= 0.88
  # Window style (one per building: this is what makes facades distinctive).
  win = {
      "wall": wall, "accent": accent,
      "frame_t": float(rng.choice([0.08, 0.12, 0.16])),
      "frame_colour": _jitter_colour(rng, _ACCENT_COLOURS[rng.integers(len(_ACCENT_COLOURS))]),
      "glass_colour": np.array([0.16, 0.2, 0.26], np.float32) * rng.uniform(0.7, 1.4),
      "blind_colour": _jitter_colour(rng, np.array([0.85, 0.82, 0.72], np.float32)),
      "blind_prob": float(rng.uniform(0.0, 0.5)),
      "shutters": rng.random() < 0.15,
      "shutter_colour": _jitter_colour(rng, np.array(
          [(0.2, 0.4, 0.25), (0.45, 0.3, 0.2), (0.25, 0.35, 0.55)][rng.integers(3)], np.float32)),
      "mullion": rng.random() < 0.45, "transom": rng.random() < 0.5,
      "arch": rng.random() < 0.12, "sill": rng.random() < 0.6,
  }
  if style == "tower":
    # Curtain wall: glass panels with mullions over the upper floors.
    glass = np.array([(0.2, 0.32, 0.38), (0.25, 0.3, 0.35), (0.15, 0.22, 0.3),
                      (0.35, 0.38, 0.4)][rng.integers(4)], np.float32)
    panel = float(rng.uniform(1.2, 2.5))
    mull = float(rng.choice([0.12, 0.2, 0.3]))
    mcol = _jitter_colour(rng, _ACCENT_COLOURS[rng.integers(len(_ACCENT_COLOURS))])
    cv.rect(ground_h, top, 0.0, width_m, mcol, _M_FRAME)
    s = 0.3
    while s + panel <= width_m - 0.3 + 1e-6:
      for f in range(floors - 1):
        z = ground_h + f * floor_h
        cv.rect(z + mull, z + floor_h - mull, s + mull / 2, s + panel - mull / 2,
                glass * rng.uniform(0.85, 1.15), _M_GLASS, glass=1.0, wid=next_wid)
        next_wid += 1
      s += panel
  else:
    ribbon = style == "modern" and rng.random() < 0.5
    if ribbon:
      win_w = float(rng.uniform(2.5, 6.0))
      gap = float(rng.uniform(0.3, 0.8))
    else:
      win_w = float(rng.uniform(0.7, 1.9))
      gap = float(rng.uniform(0.6, 2.6))
    win_h = float(min(rng.uniform(1.1, 2.1), floor_h - 0.7))
    sill_z = float(rng.uniform(0.6, min(1.1, floor_h - win_h - 0.2)))
    margin = float(rng.uniform(0.4, 2.0))
    ncols = max(1, int((width_m - 2 * margin + gap) // (win_w + gap)))
    span = ncols * win_w + (ncols - 1) * gap
    s_start = (width_m - span) / 2
    pair = rng.random() < 0.2 and ncols >= 4
    cols = []
    for i in range(ncols):
      s = s_start + i * (win_w + gap)
      if pair:
        s += (0.35 * gap if i % 2 == 0 else -0.35 * gap)
      cols.append(s)
    skip = rng.random(ncols) < (0.15 if rng.random() < 0.3 else 0.0)
    # String courses and pilasters.
    if rng.random() < 0.5:
      t = float(rng.uniform(0.15, 0.35))
      for f in range(floors):
        z = ground_h + f * floor_h if f < floors - 1 else None
        if z is not None:
          cv.rect(z - t, z, 0.0, width_m, accent, _M_FRAME, snow_top=True)
    if rng.random() < 0.25 and ncols >= 2:
      for i in range(ncols - 1):
        s = cols[i] + win_w + gap / 2
        cv.rect(ground_h, top, s - 0.2, s + 0.2, accent, _M_FRAME)
    balcony = rng.random() < 0.25
    balcony_every = int(rng.integers(1, 3))
    rail = _jitter_colour(rng, np.array([(0.1, 0.1, 0.1), (0.85, 0.85, 0.85),
                                         (0.3, 0.2, 0.15)][rng.integers(3)], np.float32))
    for f in range(floors - 1):
      zf = ground_h + f * floor_h
      for i, s in enumerate(cols):
        if skip[i]:
          continue
        if balcony and f >= 0 and i % balcony_every == 0:
          cv.rect(zf - 0.05, zf + 0.15, s - 0.4, s + win_w + 0.4, accent, _M_BALCONY,
                  snow_top=True)
          _paint_window(cv, dict(win, sill=False), zf + 0.15, s, win_w,
                        min(win_h + sill_z, floor_h - 0.4), next_wid, rng)
          for k in range(int((win_w + 0.8) / 0.25) + 1):  # Railing bars.
            sb = s - 0.4 + k * 0.25
            cv.rect(zf + 0.15, zf + 1.0, sb, sb + 0.06, rail, _M_BALCONY)
          cv.rect(zf + 0.92, zf + 1.02, s - 0.4, s + win_w + 0.4, rail, _M_BALCONY, snow_top=True)
        else:
          _paint_window(cv, win, zf + sill_z, s, win_w, win_h, next_wid, rng)
        next_wid += 1
  # Ground floor.
  kind = rng.choice(["shop", "residential", "garage"], p=(
      [0.85, 0.1, 0.05] if style == "shops" else [0.35, 0.5, 0.15]))
  plinth = float(rng.uniform(0.3, 0.8))
  cv.rect(0.0, plinth, 0.0, width_m, wall * 0.7, _M_WALL)
  if kind == "shop":
    sign_colour = _SIGN_COLOURS[rng.integers(len(_SIGN_COLOURS))]
    z1 = ground_h - float(rng.uniform(0.9, 1.4))
    cv.rect(0.45, z1, 0.3, width_m - 0.3, np.array([0.12, 0.14, 0.16], np.float32), _M_GLASS,
            glass=1.0, wid=next_wid)
    next_wid += 1
    pillar = float(rng.uniform(1.5, 4.0))
    s = 0.3
    while s < width_m - 0.3:
      cv.rect(0.45, z1, s, s + 0.15, accent, _M_FRAME)
      s += pillar
    door_s = float(rng.uniform(0.5, max(0.6, width_m - 1.8)))
    cv.rect(0.0, min(2.4, z1), door_s, door_s + 1.2, np.array([0.2, 0.2, 0.22], np.float32),
            _M_DOOR)
    # Sign band with "letters".
    sz0, sz1 = z1 + 0.1, ground_h - 0.15
    s_len = float(rng.uniform(0.4, 0.95)) * width_m
    s_off = float(rng.uniform(0.0, width_m - s_len))
    cv.rect(sz0, sz1, s_off, s_off + s_len, sign_colour, _M_SIGN, wid=next_wid)
    letter = _SIGN_COLOURS[(np.argmax(sign_colour.sum() < 1.2) + rng.integers(1, 7)) %
                           len(_SIGN_COLOURS)]
    if abs(letter.sum() - sign_colour.sum()) < 0.6:
      letter = np.array([0.95, 0.95, 0.95]) if sign_colour.sum() < 1.5 else np.zeros(3)
    s = s_off + 0.3
    while s < s_off + s_len - 0.5:
      lw = float(rng.uniform(0.2, 0.45))
      cv.rect(sz0 + 0.15, sz1 - 0.15, s, s + lw, letter, _M_SIGN, wid=next_wid)
      s += lw + float(rng.uniform(0.1, 0.3))
    next_wid += 1
    if rng.random() < 0.4:  # Striped awning.
      ac = _SIGN_COLOURS[rng.integers(len(_SIGN_COLOURS))]
      az0 = z1 - 0.7
      rs, cs = cv.sl(az0, z1, 0.2, width_m - 0.2)
      stripes = ((np.arange(cs.start, cs.stop) // 4) % 2 == 0)
      cv.rect(az0, z1, 0.2, width_m - 0.2, ac, _M_AWNING, snow_top=True)
      cv.rgb[rs, cs][:, stripes] = np.array([0.93, 0.93, 0.9], np.float32)
  elif kind == "residential":
    door_w = float(rng.uniform(1.0, 1.8))
    door_s = float(rng.uniform(0.4, max(0.5, width_m - door_w - 0.4)))
    door_col = _jitter_colour(rng, np.array([(0.35, 0.2, 0.12), (0.1, 0.15, 0.3),
                                             (0.15, 0.3, 0.2), (0.5, 0.1, 0.1)][rng.integers(4)],
                                            np.float32))
    cv.rect(0.0, 2.5, door_s - 0.15, door_s + door_w + 0.15, accent, _M_FRAME)
    cv.rect(0.0, 2.35, door_s, door_s + door_w, door_col, _M_DOOR)
    gw = float(rng.uniform(0.8, 1.6))
    s = 0.6
    while s + gw < width_m - 0.4:
      if s + gw < door_s - 0.3 or s > door_s + door_w + 0.3:
        _paint_window(cv, win, 1.1, s, gw, min(1.6, ground_h - 1.6), next_wid, rng)
        next_wid += 1
      s += gw + float(rng.uniform(0.8, 2.0))
  else:
    gw = float(min(rng.uniform(2.4, 3.5), width_m - 0.8))
    gs = float(rng.uniform(0.4, width_m - gw - 0.4))
    rs, cs = cv.sl(0.0, 2.4, gs, gs + gw)
    cv.rect(0.0, 2.4, gs, gs + gw, _jitter_colour(rng, np.array([0.55, 0.55, 0.55], np.float32)),
            _M_DOOR)
    cv.rgb[rs, cs][(np.arange(rs.start, rs.stop) % 3) == 0] *= 0.7
  # Cornice and roof line.
  corn = float(rng.uniform(0.25, 0.7))
  cv.rect(height - corn, height, 0.0, width_m, accent, _M_FRAME, snow_top=True)
  roof = rng.choice(["flat", "gable", "hip", "setback"], p=[0.45, 0.2, 0.2, 0.15])
  roof_top = height
  if roof in ("gable", "hip") and style != "tower":
    rise = float(rng.uniform(1.5, 4.5))
    roof_colour = _jitter_colour(rng, _ROOF_COLOURS[rng.integers(len(_ROOF_COLOURS))])
    s_m = (np.arange(cv.w) + 0.5) / _PPM
    if roof == "gable":
      prof = height + rise * (1.0 - np.abs(2.0 * s_m / width_m - 1.0))
    else:
      prof = height + np.minimum(rise, np.minimum(s_m, width_m - s_m))
    prof = np.where(s_m < width_m, prof, height)
    z_m = (np.arange(cv.h) + 0.5) / _PPM
    in_roof = (z_m[:, None] >= height) & (z_m[:, None] < prof[None, :])
    cv.rgb[in_roof] = roof_colour
    cv.mat[in_roof] = _M_ROOF
    cv.snow[in_roof] = 1.0
    cv.alpha |= in_roof
    tiles = in_roof & ((np.arange(cv.h) % 3) == 0)[:, None]
    cv.rgb[tiles] *= 0.8
    roof_top = height + rise
    if rng.random() < 0.4:  # Dormers.
      for s in cols if style != "tower" and len(cols) else []:
        if rng.random() < 0.5:
          cv.rect(height + 0.2, height + 1.3, s, s + 0.8, accent, _M_FRAME, snow_top=True)
          cv.rect(height + 0.35, height + 1.15, s + 0.12, s + 0.68, win["glass_colour"], _M_GLASS,
                  glass=1.0, wid=next_wid)
          next_wid += 1
  elif roof == "setback" and width_m > 10:
    extra = float(rng.uniform(2.5, 3.5))
    a = float(rng.uniform(0.1, 0.4)) * width_m
    b = width_m - float(rng.uniform(0.1, 0.4)) * width_m
    cv.rect(height, height + extra, a, b, _jitter_colour(rng, wall * 0.9), _M_WALL)
    for s in np.arange(a + 0.6, b - 1.2, 2.2):
      cv.rect(height + 0.8, height + 2.6, s, s + 1.4, win["glass_colour"], _M_GLASS, glass=1.0,
              wid=next_wid)
      next_wid += 1
    cv.rect(height + extra - 0.3, height + extra, a, b, accent, _M_FRAME, snow_top=True)
    roof_top = height + extra
  if rng.random() < 0.3:  # Chimneys / rooftop boxes on flat parts.
    for _ in range(int(rng.integers(1, 4))):
      cw = float(rng.uniform(0.5, 2.5))
      cs0 = float(rng.uniform(0.2, max(0.3, width_m - cw - 0.2)))
      ch = float(rng.uniform(0.8, 2.5))
      base = height if roof in ("flat", "setback") else roof_top - 1.0
      cv.rect(base, base + ch, cs0, cs0 + cw, _jitter_colour(rng, wall * 0.8), _M_WALL,
              snow_top=True)
      roof_top = max(roof_top, base + ch)
  # Texels beyond the facade width are transparent.
  cv.alpha[:, int(math.ceil(width_m * _PPM)):] = False
  return cv, next_wid, float(roof_top), wall


def _paint_car(rng: np.random.Generator, length: float, height: float, colour: np.ndarray,
               side: bool, front: bool, height_px: int) -> _Canvas:
  """One face of a car (side or end) as a texture."""
  cv = _Canvas(length, height_px)
  body_top = height * 0.62
  cv.rect(0.25, body_top, 0.0, length, colour, _M_CAR)
  glass = np.array([0.1, 0.12, 0.15], np.float32)
  if side:
    cv.rect(body_top, height, 0.12 * length, 0.88 * length, colour * 0.9, _M_CAR)
    cv.rect(body_top + 0.05, height - 0.08, 0.17 * length, 0.5 * length - 0.05, glass, _M_CARGLASS,
            glass=0.4)
    cv.rect(body_top + 0.05, height - 0.08, 0.5 * length + 0.05, 0.83 * length, glass,
            _M_CARGLASS, glass=0.4)
    for sc in (0.8, length - 0.8):  # Wheels.
      rs, cs = cv.sl(0.0, 0.66, sc - 0.33, sc + 0.33)
      zz = (np.arange(rs.start, rs.stop) + 0.5) / _PPM - 0.33
      ss = (np.arange(cs.start, cs.stop) + 0.5) / _PPM - sc
      disk = zz[:, None] ** 2 + ss[None, :] ** 2 < 0.33 ** 2
      sub = (rs, cs)
      cv.rgb[sub][disk] = (0.05, 0.05, 0.05)
      cv.mat[sub][disk] = _M_TYRE
      cv.alpha[sub] |= disk
  else:
    cv.rect(body_top, height, 0.1 * length, 0.9 * length, colour * 0.9, _M_CAR)
    cv.rect(body_top + 0.05, height - 0.08, 0.15 * length, 0.85 * length, glass, _M_CARGLASS,
            glass=0.4)
    light = np.array([1.0, 0.95, 0.8] if front else [0.7, 0.05, 0.05], np.float32)
    for s0 in (0.08, length - 0.38):
      cv.rect(body_top - 0.25, body_top - 0.1, s0, s0 + 0.3, light, _M_HEAD if front else _M_TAIL)
    cv.rect(0.25, 0.45, 0.0, length, (0.1, 0.1, 0.1), _M_CAR)
    cv.rect(0.0, 0.25, 0.1, 0.35, (0.05, 0.05, 0.05), _M_TYRE)
    cv.rect(0.0, 0.25, length - 0.35, length - 0.1, (0.05, 0.05, 0.05), _M_TYRE)
  cv.alpha[:, int(math.ceil(length * _PPM)):] = False
  return cv


def _paint_person(rng: np.random.Generator, height_px: int) -> _Canvas:
  """A pedestrian billboard 0.6 m wide."""
  cv = _Canvas(0.6, height_px)
  h = float(rng.uniform(1.55, 1.9))
  shirt = rng.uniform(0.05, 0.9, 3).astype(np.float32)
  pants = rng.uniform(0.05, 0.5, 3).astype(np.float32)
  skin = np.array([(0.85, 0.7, 0.6), (0.6, 0.45, 0.35), (0.35, 0.25, 0.2)][rng.integers(3)],
                  np.float32)
  cv.rect(0.0, h * 0.48, 0.14, 0.28, pants, _M_PERSON)
  cv.rect(0.0, h * 0.48, 0.32, 0.46, pants, _M_PERSON)
  cv.rect(h * 0.48, h * 0.84, 0.1, 0.5, shirt, _M_PERSON)
  cv.rect(h * 0.86, h, 0.2, 0.4, skin, _M_PERSON)
  cv.alpha[:, int(math.ceil(0.6 * _PPM)):] = False
  return cv


@dataclasses.dataclass
class _Atlas:
  """Facade textures of a city, packed side by side in one strip, with mip levels, flattened."""

  rgb: np.ndarray  # (N, 3) float32 albedo (sRGB-ish, [0, 1])
  glass: np.ndarray  # (N,) float32 glass coverage
  snow: np.ndarray  # (N,) float32 snow-catching coverage
  mat: np.ndarray  # (N,) uint8 material
  wid: np.ndarray  # (N,) int32 window / sign id (0 = none)
  alpha: np.ndarray  # (N,) bool opaque
  level_offset: np.ndarray  # (L,) int64 start of each level in the flat arrays
  level_width: np.ndarray  # (L,) int64 texels per row of each level
  level_height: np.ndarray  # (L,) int64 rows of each level


def _pack_atlas(canvases: Sequence[_Canvas]) -> tuple[_Atlas, np.ndarray]:
  """Packs canvases into a mip-mapped atlas; returns it and each canvas' first column (level 0)."""
  col0 = np.cumsum([0] + [c.w for c in canvases[:-1]]).astype(np.int64)
  rgb = np.concatenate([c.rgb for c in canvases], 1)
  glass = np.concatenate([c.glass for c in canvases], 1)
  snow = np.concatenate([c.snow for c in canvases], 1)
  mat = np.concatenate([c.mat for c in canvases], 1)
  wid = np.concatenate([c.wid for c in canvases], 1)
  alpha = np.concatenate([c.alpha for c in canvases], 1).astype(np.float32)
  levels = []
  for lvl in range(_LEVELS):
    if lvl:
      def down(a):
        return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])
      # Colours average over opaque texels only (transparent texels carry no colour).
      wgt = down(alpha)
      rgb = down(rgb * alpha[..., None]) / np.maximum(wgt, 1e-6)[..., None]
      glass, snow = down(glass), down(snow)
      mat, wid = mat[0::2, 0::2], wid[0::2, 0::2]
      alpha = wgt
    levels.append((rgb, glass, snow, mat, wid, alpha >= 0.5))
  widths = np.array([lv[0].shape[1] for lv in levels], np.int64)
  heights = np.array([lv[0].shape[0] for lv in levels], np.int64)
  offsets = np.cumsum([0] + list(widths * heights))[:-1].astype(np.int64)
  atlas = _Atlas(
      rgb=np.concatenate([lv[0].reshape(-1, 3) for lv in levels]).astype(np.float32),
      glass=np.concatenate([lv[1].reshape(-1) for lv in levels]).astype(np.float32),
      snow=np.concatenate([lv[2].reshape(-1) for lv in levels]).astype(np.float32),
      mat=np.concatenate([lv[3].reshape(-1) for lv in levels]).astype(np.uint8),
      wid=np.concatenate([lv[4].reshape(-1) for lv in levels]).astype(np.int32),
      alpha=np.concatenate([lv[5].reshape(-1) for lv in levels]),
      level_offset=offsets, level_width=widths, level_height=heights)
  return atlas, col0


# ---------------------------------------------------------------------------------------------
# City geometry
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
  atlas: _Atlas
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


def build_city(config: WorldConfig, name: str) -> City:
  """Builds the street grid, buildings, facade atlas, trees and lamps of one city."""
  rng = _rng(config.seed, "city", name)
  lo, hi = config.streets_per_axis
  n_v = int(rng.integers(lo, hi + 1))
  n_h = int(rng.integers(lo, hi + 1))
  road = rng.choice([5.0, 5.5, 6.0, 7.0], size=n_v + n_h)
  side = rng.uniform(2.2, 3.8, size=n_v + n_h)
  off = rng.uniform(*config.block_size_m, size=n_v - 1)
  xs = np.concatenate([[0.0], np.cumsum(off)])
  off = rng.uniform(*config.block_size_m, size=n_h - 1)
  ys = np.concatenate([[0.0], np.cumsum(off)])
  hw_v = road[:n_v] + side[:n_v]
  hw_h = road[n_v:] + side[n_v:]
  streets = []
  for i in range(n_v):
    streets.append(Street(0, float(xs[i]), float(ys[0]), float(ys[-1]), float(road[i]),
                          float(side[i])))
  for j in range(n_h):
    streets.append(Street(1, float(ys[j]), float(xs[0]), float(xs[-1]), float(road[n_v + j]),
                          float(side[n_v + j])))
  # Buildings line every street-facing edge: inner blocks (4 edges) and an outer ring (1 edge).
  band = 25.0
  x_in0, x_in1 = xs[0] - hw_v[0], xs[-1] + hw_v[-1]
  y_in0, y_in1 = ys[0] - hw_h[0], ys[-1] + hw_h[-1]
  edges = []  # (p0, p1, inward normal into the block)
  for i in range(n_v - 1):
    for j in range(n_h - 1):
      bx0, bx1 = xs[i] + hw_v[i], xs[i + 1] - hw_v[i + 1]
      by0, by1 = ys[j] + hw_h[j], ys[j + 1] - hw_h[j + 1]
      edges += [((bx0, by0), (bx1, by0), (0, 1)), ((bx1, by1), (bx0, by1), (0, -1)),
                ((bx0, by1), (bx0, by0), (1, 0)), ((bx1, by0), (bx1, by1), (-1, 0))]
  edges += [((x_in0, y_in0), (x_in1, y_in0), (0, -1)), ((x_in1, y_in1), (x_in0, y_in1), (0, 1)),
            ((x_in0, y_in1), (x_in0, y_in0), (-1, 0)), ((x_in1, y_in0), (x_in1, y_in1), (1, 0))]
  height_px = int(_ATLAS_HEIGHT_M * _PPM)
  canvases, p0s, p1s, heights, depths, walls = [], [], [], [], [], []
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
      cv, next_wid, top, wall = _paint_building(rng, w, next_wid, height_px)
      canvases.append(cv)
      walls.append(wall)
      p0s.append(a + u * s)
      p1s.append(a + u * (s + w))
      heights.append(top)
      depths.append((np.array(nrm, float), float(rng.uniform(8.0, 16.0))))
      s += w
  n_fac = len(canvases)
  # Car and pedestrian templates share the atlas.
  car_specs = []
  for k in range(12):
    kind = k % 4
    length, width, height = ((4.3, 1.8, 1.5) if kind < 2 else (4.7, 1.9, 1.6) if kind == 2 else
                             (5.2, 2.0, 2.3))
    colour = _jitter_colour(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 0.03)
    canvases.append(_paint_car(rng, length, height, colour, True, False, height_px))
    canvases.append(_paint_car(rng, width, height, colour, False, k % 2 == 0, height_px))
    roof = _Canvas(length, height_px)
    roof.rect(0.0, height, 0.0, length, np.clip(colour * 1.05, 0, 1), _M_CAR)
    canvases.append(roof)
    car_specs.append((length, width))
  for k in range(10):
    canvases.append(_paint_person(rng, height_px))
  atlas, col0 = _pack_atlas(canvases)
  car_templates = []
  for k, (length, width) in enumerate(car_specs):
    i = n_fac + 3 * k
    car_templates.append((int(col0[i]), int(col0[i + 1]), int(col0[i + 2]), length, width))
  n_car = 3 * len(car_specs)
  person_templates = [(int(col0[n_fac + n_car + k]), canvases[n_fac + n_car + k].w)
                      for k in range(10)]
  seg_p0 = np.array(p0s, np.float64)
  seg_p1 = np.array(p1s, np.float64)
  seg_texw = np.array([int(math.ceil(np.linalg.norm(q - p) * _PPM)) for p, q in zip(p0s, p1s)],
                      np.int64)
  # Height map of building footprints (for cast shadows), 0.5 m cells.
  res = 0.5
  bx0, by0 = x_in0 - band, y_in0 - band
  bx1, by1 = x_in1 + band, y_in1 + band
  nx = int(math.ceil((bx1 - bx0) / res))
  ny = int(math.ceil((by1 - by0) / res))
  hm = np.zeros((ny, nx), np.float32)
  for p, q, top, (nrm, depth) in zip(p0s, p1s, heights, depths):
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
  # Trees and lamp posts along the sidewalks.
  cyl, crowns, lamps = [], [], []
  tree_id = 0
  for st in streets:
    for sgn in (-1.0, 1.0):
      if rng.random() < 0.5:
        spacing = float(rng.uniform(7.0, 12.0))
        r = float(rng.uniform(1.4, 2.6))
        zc = float(rng.uniform(4.0, 6.0))
        hz = float(rng.uniform(1.3, 2.4))
        a = st.start + float(rng.uniform(0, spacing))
        while a < st.end:
          lat = sgn * (st.road_half + 0.8)
          if _far_from_crossings(a, st, streets):
            x, y = st.point(a, lat)
            rj = r * rng.uniform(0.85, 1.15)
            cyl.append((x, y, float(rng.uniform(0.12, 0.22)), 0.0, zc - hz * 0.3, 0))
            crowns.append((x, y, rj, zc, hz * rng.uniform(0.9, 1.1), tree_id))
            tree_id += 1
          a += spacing * rng.uniform(0.8, 1.2)
    spacing = float(rng.uniform(22.0, 32.0))
    a = st.start + float(rng.uniform(0, spacing))
    k = 0
    while a < st.end:
      sgn = 1.0 if k % 2 == 0 else -1.0
      if _far_from_crossings(a, st, streets):
        x, y = st.point(a, sgn * (st.road_half + 0.35))
        hz = float(rng.uniform(6.0, 7.5))
        cyl.append((x, y, 0.09, 0.0, hz, 1))
        hx, hy = st.point(a, sgn * (st.road_half - 0.9))
        cyl.append((hx, hy, 0.3, hz - 0.25, hz, 2))
        lamps.append((hx, hy, hz - 0.3))
      a += spacing
      k += 1
  cyl = np.array(cyl, np.float64).reshape(-1, 6)
  crowns = np.array(crowns, np.float64).reshape(-1, 6)
  for (x, y, r, zc, hz, _) in crowns:  # Crowns shade the ground too.
    i0, i1 = int((x - r - bx0) / res), int(math.ceil((x + r - bx0) / res))
    j0, j1 = int((y - r - by0) / res), int(math.ceil((y + r - by0) / res))
    hm[j0:j1, i0:i1] = np.maximum(hm[j0:j1, i0:i1], zc + hz)
  # Repainting: in every epoch some buildings have another wall colour and some shops another
  # sign colour (a channel permutation); epoch 0 is the painted atlas.
  prng = _rng(config.seed, "repaint", name)
  walls = np.array(walls, np.float32)
  tint = np.ones((config.epochs, n_fac, 3), np.float32)
  sign_perm = np.zeros((config.epochs, n_fac), np.int8)
  for e in range(1, config.epochs):
    new = _WALL_COLOURS[prng.integers(len(_WALL_COLOURS), size=n_fac)]
    new = np.clip(new * prng.uniform(0.9, 1.1, (n_fac, 1)), 0.05, 1.0)
    rep = prng.random(n_fac) < config.repaint_probability
    tint[e, rep] = (new[rep] / np.maximum(walls[rep], 0.05)) ** 2.2
    sign_perm[e] = np.where(prng.random(n_fac) < config.repaint_probability,
                            prng.integers(1, 6, n_fac), 0)
  # Cities sit 5 km apart in one UTM zone, in config order.
  cities = config.train_cities + config.val_cities
  k = cities.index(name) if name in cities else len(cities)
  origin = (_UTM_ORIGIN[0] - 20_000.0 + 5_000.0 * (k % 9), _UTM_ORIGIN[1] + 5_000.0 * (k // 9))
  return City(
      name=name, origin=origin, streets=streets, seg_p0=seg_p0, seg_p1=seg_p1,
      seg_col0=col0[:n_fac].copy(), seg_texw=seg_texw,
      seg_top=np.array(heights, np.float64) + 0.5, wall_tint=tint, sign_perm=sign_perm,
      atlas=atlas, car_templates=car_templates,
      person_templates=person_templates, heightmap=hm, hm_origin=(bx0, by0), hm_res=res,
      cyl=cyl, crowns=crowns, lamps=np.array(lamps, np.float64).reshape(-1, 3),
      crossing=rng.random((n_v, n_h)) < 0.6,
      asphalt=rng.uniform(0.75, 1.2, len(streets)).astype(np.float32),
      bounds=(float(x_in0), float(y_in0), float(x_in1), float(y_in1)))


def _far_from_crossings(a: float, st: Street, streets: list[Street]) -> bool:
  """Whether `along` position a on street st is clear of the cross streets (plus 3 m)."""
  for o in streets:
    if o.axis != st.axis and abs(a - o.coord) < o.road_half + o.sidewalk + 3.0:
      return False
  return True


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


def make_condition(name: str, seed: int, epoch: int = 0) -> Condition:
  """Draws a traversal's appearance for condition `name` (one of CONDITIONS) in `epoch`."""
  if name not in CONDITIONS:
    raise ValueError(f"unknown condition {name!r}; known: {CONDITIONS}")
  rng = _rng(seed, "condition", name)
  u = rng.uniform
  az = math.radians(u(0, 360))
  lighting = {"sunny": "sunny", "overcast": "overcast", "autumn": rng.choice(["sunny", "overcast"]),
              "winter": rng.choice(["sunny", "overcast"]), "dusk": "dusk", "night": "night",
              "fog": "overcast"}[name]
  season = {"autumn": "autumn", "winter": "winter"}.get(name, "summer")
  if name == "night" and rng.random() < 0.3:
    season = "winter"
  el = math.radians(u(12, 28) if season == "winter" else u(25, 60))
  sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
  no_sun = (0.0, 0.0, 1.0)
  if lighting == "sunny":
    k = {"ambient": (0.22, 0.25, 0.32), "sun_colour": (1.2, 1.12, 0.98), "sun": sun,
         "sky_horizon": (0.62, 0.75, 0.92), "sky_zenith": (0.18, 0.36, 0.75),
         "cloud_colour": (0.95, 0.95, 0.97), "cloud_cover": u(0.0, 0.5)}
  elif lighting == "overcast":
    g = u(0.45, 0.85)
    k = {"ambient": (g, g, g * 1.04), "sun_colour": (0.0, 0.0, 0.0), "sun": no_sun,
         "sky_horizon": (0.82, 0.83, 0.85), "sky_zenith": (0.62, 0.64, 0.68),
         "cloud_colour": (0.55, 0.56, 0.6), "cloud_cover": u(0.4, 0.9)}
  elif lighting == "dusk":
    k = {"ambient": (0.30, 0.22, 0.2), "sun_colour": (0.0, 0.0, 0.0), "sun": no_sun,
         "sky_horizon": (0.95, 0.52, 0.28), "sky_zenith": (0.16, 0.14, 0.32),
         "cloud_colour": (0.55, 0.3, 0.35), "cloud_cover": u(0.2, 0.7)}
  else:
    k = {"ambient": (0.018, 0.02, 0.032), "sun_colour": (0.0, 0.0, 0.0), "sun": no_sun,
         "sky_horizon": (0.05, 0.045, 0.05), "sky_zenith": (0.004, 0.006, 0.015),
         "cloud_colour": (0.06, 0.05, 0.05), "cloud_cover": u(0.0, 0.6)}
  fog_distance = 600.0
  fog_colour = k["sky_horizon"]
  if name == "fog":
    fog_distance = u(14.0, 35.0)
    fog_colour = tuple(float(c) for c in np.array((0.78, 0.8, 0.82)) * u(0.85, 1.05))
    k["sky_horizon"] = k["sky_zenith"] = fog_colour
    k["cloud_cover"] = 0.0
  if season == "winter" and lighting == "overcast":
    k["sky_horizon"], k["sky_zenith"] = (0.86, 0.87, 0.9), (0.72, 0.74, 0.78)
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
# Transient objects and cameras
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


def make_transients(city: City, street: Street, camera_lateral: float, density: float,
                    rng: np.random.Generator) -> Transients:
  """Parked and moving cars and pedestrians along `street` for one traversal."""
  p0, p1, col0, texw, roof, centre, people = [], [], [], [], [], [], []

  def add_car(a: float, lat: float) -> None:
    side_c, end_c, roof_c, length, width = city.car_templates[
        rng.integers(len(city.car_templates))]
    hl, hw = length / 2, width / 2
    corners = [(a - hl, lat - hw), (a + hl, lat - hw), (a + hl, lat + hw), (a - hl, lat + hw)]
    pts = [np.array(street.point(c[0], c[1])) for c in corners]
    for k in range(4):
      p0.append(pts[k])
      p1.append(pts[(k + 1) % 4])
      long_side = k % 2 == 0
      col0.append(side_c if long_side else end_c)
      texw.append(int(math.ceil((length if long_side else width) * _PPM)))
      roof.append(roof_c)
      centre.append(street.point(a, lat))

  if density > 0:
    for sgn in (-1.0, 1.0):
      a = street.start + rng.uniform(-5, 10)
      while a < street.end:
        if rng.random() < 0.55 and _far_from_crossings(a, street, city.streets):
          add_car(a, sgn * (street.road_half - 1.1))
        a += rng.uniform(5.5, 14.0) / density
      lat = sgn * (street.road_half - 3.0) * 0.5 + sgn * 0.3
      if abs(lat - camera_lateral) > 2.6:
        a = street.start + rng.uniform(0, 40)
        while a < street.end:
          add_car(a, lat)
          a += rng.uniform(25.0, 70.0) / density
      a = street.start + rng.uniform(0, 8)
      while a < street.end:
        lat = sgn * (street.road_half + rng.uniform(0.5, street.sidewalk - 0.4))
        x, y = street.point(a, lat)
        people.append((x, y, rng.integers(len(city.person_templates))))
        a += rng.uniform(4.0, 22.0) / density
  if not p0:
    return Transients.empty()
  return Transients(np.array(p0), np.array(p1), np.array(col0, np.int64),
                    np.array(texw, np.int64), np.array(roof, np.int64),
                    np.array(centre, np.float64), np.array(people, np.float64).reshape(-1, 3))


# ---------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------

_K_SKY, _K_GROUND, _K_SEG, _K_CYL, _K_CROWN = range(5)


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
  return np.power(np.clip(c, 0.0, 1.0), 2.2)


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
  H, W = height * ss, width * ss
  hd = math.radians(camera.heading_deg)
  h = camera.height_m
  cpos = np.array([camera.x, camera.y])
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
  # A ray point is C + t * D(u): t is the depth along the optical axis (pinhole) or the
  # horizontal distance (panorama); pixel row v sees height h + (cy - v - 0.5) * t / f.
  dn = np.linalg.norm(D, axis=1)
  Dn = D / dn[:, None]
  N = H * W
  rows = np.arange(H, dtype=np.float64)[:, None]
  depth = np.full(N, np.inf)
  kind = np.zeros(N, np.int8)
  obj = np.zeros(N, np.int64)  # flat atlas index / cylinder index / crown index
  seg_of = np.zeros(N, np.int64)
  atlas = city.atlas

  def band(t_col: np.ndarray, z_lo: np.ndarray, z_hi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Flat indices of pixels whose ray height at depth t_col is within [z_lo, z_hi]."""
    tt = np.where(ok, t_col, 1.0)
    r0 = np.ceil(cy - (z_hi - h) * f / tt - 0.5)
    r1 = np.floor(cy + (h - z_lo) * f / tt - 0.5) + 1
    r0 = np.where(ok, np.clip(r0, 0, H), 0)
    r1 = np.where(ok, np.clip(r1, 0, H), 0)
    return np.flatnonzero((rows >= r0[None, :]) & (rows < r1[None, :]))

  # --- Segments: facades, cars, pedestrian billboards ---------------------------------------
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
    tw.append(np.full(len(tmpl), int(math.ceil(0.6 * _PPM)), np.int64))
    top.append(np.full(len(tmpl), 2.0))
    back.append(np.zeros(len(tmpl), bool))
  BACK = np.concatenate(back)
  P0 = np.concatenate(p0)
  E = np.concatenate(p1) - P0
  C0 = np.concatenate(c0)
  TW = np.concatenate(tw)
  TOP = np.concatenate(top)
  seg_len = np.linalg.norm(E, axis=1)
  seg_n = np.stack([-E[:, 1], E[:, 0]], -1) / seg_len[:, None]
  rel0 = P0 - cpos
  den = D[:, 0:1] * E[None, :, 1] - D[:, 1:2] * E[None, :, 0]
  with np.errstate(divide="ignore", invalid="ignore"):
    t = (rel0[None, :, 0] * E[None, :, 1] - E[None, :, 0] * rel0[None, :, 1]) / den
    s = (D[:, 1:2] * rel0[None, :, 0] - D[:, 0:1] * rel0[None, :, 1]) / den
  t = np.where((np.abs(den) > 1e-12) & (t > _NEAR / dn[:, None]) & (s >= 0) & (s <= 1), t, np.inf)
  K = min(5, t.shape[1])
  if t.shape[1] > K:
    order = np.argpartition(t, K - 1, axis=1)[:, :K]
  else:
    order = np.tile(np.arange(t.shape[1]), (W, 1))
  tK = np.take_along_axis(t, order, 1)
  srt = np.argsort(tK, axis=1)
  order = np.take_along_axis(order, srt, 1)
  tK = np.take_along_axis(tK, srt, 1)
  sK = np.take_along_axis(s, order, 1)
  open_ = np.ones(N, bool)  # Layers go front to back: a covered pixel stays covered.
  for k in range(K):
    tk, sk = tK[:, k], order[:, k]
    ok = np.isfinite(tk)
    if not ok.any():
      break
    tks = np.where(ok, tk, 1.0)
    idx = band(tks, np.zeros(W), TOP[sk], ok)
    idx = idx[open_[idx]]
    if not len(idx):
      continue
    s_m = sK[:, k] * seg_len[sk]
    foot = tks * dn / f * _PPM  # Level-0 texels per pixel.
    lvl = np.clip(np.round(np.log2(np.maximum(foot, 1e-6))), 0, _LEVELS - 1).astype(np.int64)
    ppm_l = _PPM / (2.0 ** lvl)
    col = atlas.level_offset[lvl] + (C0[sk] >> lvl) + np.clip(
        np.floor(s_m * ppm_l).astype(np.int64), 0, np.maximum((TW[sk] >> lvl) - 1, 0))
    c = idx % W
    Z = h + (cy - (idx // W + 0.5)) * tks[c] / f
    row = np.clip(np.floor(Z * ppm_l[c]).astype(np.int64), 0, atlas.level_height[lvl[c]] - 1)
    flat = col[c] + row * atlas.level_width[lvl[c]]
    a = atlas.alpha[flat]
    sel = idx[a]
    depth[sel] = tks[c[a]]
    kind[sel] = _K_SEG
    obj[sel] = flat[a]
    seg_of[sel] = sk[c[a]]
    open_[sel] = False

  # --- Cylinders (trunks, poles, lamp heads) and tree crowns ---------------------------------
  def circle_hits(circles: np.ndarray):
    relc = circles[:, :2] - cpos
    along = Dn @ relc.T  # (W, n)
    perp = Dn[:, 0:1] * relc[None, :, 1] - Dn[:, 1:2] * relc[None, :, 0]
    r = circles[:, 2][None, :]
    half = np.sqrt(np.maximum(r ** 2 - perp ** 2, 0.0))
    t_in = (along - half) / dn[:, None]
    t_in = np.where((np.abs(perp) < r) & (t_in > _NEAR / dn[:, None]), t_in, np.inf)
    return t_in, along, perp

  def nearest(circles: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.linalg.norm(circles[:, :2] - cpos, axis=1) < 150.0)

  cols = np.arange(W)

  def nearest_first(t_in: np.ndarray, passes: int):
    """Per pass, each column's nearest circle not taken yet: yields (j, t, ok), t = 1 where the
    column has none left (ok False); stops early once no column has one."""
    for _ in range(passes):
      j = np.argmin(t_in, axis=1)
      t = t_in[cols, j]
      t_in[cols, j] = np.inf
      ok = np.isfinite(t)
      if not ok.any():
        return
      yield j, np.where(ok, t, 1.0), ok

  idx_c = nearest(city.cyl) if len(city.cyl) else np.zeros(0, np.int64)
  if len(idx_c):
    cz = city.cyl[idx_c]
    t_in, _, _ = circle_hits(cz)
    for j, tks, ok in nearest_first(t_in, min(2, len(idx_c))):
      idx = band(tks, cz[j, 3], cz[j, 4], ok)
      c = idx % W
      win = tks[c] < depth[idx]
      sel = idx[win]
      depth[sel] = tks[c[win]]
      kind[sel] = _K_CYL
      obj[sel] = idx_c[j[c[win]]]
  idx_t = nearest(city.crowns) if len(city.crowns) else np.zeros(0, np.int64)
  if len(idx_t):
    cr = city.crowns[idx_t]
    t_in, along, perp = circle_hits(cr)
    leaf = _noise(2)
    thr = {"summer": 0.38, "autumn": 0.45, "winter": 0.62}[condition.season]
    for j, tks, ok in nearest_first(t_in, min(2, len(idx_t))):
      tmid = np.where(ok, along[cols, j] / dn, 1.0)
      q = np.clip(perp[cols, j] / cr[j, 2], -1, 1)
      e = cr[j, 4] * np.sqrt(1 - q ** 2)
      idx = band(tmid, cr[j, 3] - e, cr[j, 3] + e, ok)
      c = idx % W
      Z = h + (cy - (idx // W + 0.5)) * tmid[c] / f
      tid = cr[j[c], 5]
      nz = _sample_noise(leaf, (q[c] * 12 + tid * 37.0) * 3.0, Z * 9.0 + tid * 11.0)
      edge = np.abs(Z - cr[j[c], 3]) / np.maximum(e[c], 1e-6)
      win = (nz + 0.25 * (1 - edge) > thr) & (tks[c] < depth[idx])
      sel = idx[win]
      depth[sel] = tks[c[win]]
      kind[sel] = _K_CROWN
      obj[sel] = idx_t[j[c[win]]]

  # --- Ground and sky ------------------------------------------------------------------------
  pr = np.repeat(np.arange(H), W) + 0.5  # pixel row centre
  pc = np.tile(np.arange(W), H)  # pixel column
  ground = (pr > cy) & ~np.isfinite(depth)
  depth[ground] = f * h / (pr[ground] - cy)
  kind[ground] = _K_GROUND
  sky = ~np.isfinite(depth)
  kind[sky] = _K_SKY
  solid = np.flatnonzero(~sky)

  # --- Shading (on solid pixels) ---------------------------------------------------------------
  ks = kind[solid]
  td = depth[solid]
  cs = pc[solid]
  px = cpos[0] + td * D[cs, 0]
  py = cpos[1] + td * D[cs, 1]
  pz = h + (cy - pr[solid]) * td / f
  alb = np.zeros((len(solid), 3), np.float32)
  emis = np.zeros((len(solid), 3), np.float32)
  normal = np.zeros((len(solid), 3), np.float32)
  sun_c = np.array(condition.sun_colour, np.float32)
  sun = np.array(condition.sun, np.float32)

  m = np.flatnonzero(ks == _K_SEG)
  if len(m):
    fi = obj[solid[m]]
    a = _srgb_to_linear(atlas.rgb[fi])
    mat = atlas.mat[fi]
    g = atlas.glass[fi][:, None]
    if condition.season == "winter":
      sn = atlas.snow[fi][:, None] * 0.9
      a = a * (1 - sn) + 0.85 * sn
    si = seg_of[solid[m]]
    static = si < len(city.seg_p0)
    if condition.epoch:
      e_ = condition.epoch % len(city.wall_tint)
      wall_px = static & (mat == _M_WALL)
      a[wall_px] *= city.wall_tint[e_, si[wall_px]]
      sign_px = np.flatnonzero(static & (mat == _M_SIGN))
      perm = city.sign_perm[e_, si[sign_px]]
      for pk, pp in enumerate(((0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2))):
        if pk:
          sel_ = sign_px[perm == pk]
          a[sel_] = a[sel_][:, pp]
    nrm = seg_n[si]
    to_cam = cpos - np.stack([px[m], py[m]], -1)
    sgn = np.where((nrm * to_cam).sum(-1) >= 0, 1.0, -1.0)[:, None]
    nrm3 = np.concatenate([nrm * sgn, np.zeros((len(nrm), 1))], -1)
    nrm3[BACK[si]] = (0.0, 0.0, 1.0)
    normal[m] = nrm3
    if not condition.night:  # Glass reflects the sky.
      a = a + g * np.array(condition.sky_horizon, np.float32) * 0.3
    alb[m] = a
    if condition.window_lit > 0:
      wid = atlas.wid[fi]
      e = np.zeros_like(a)
      lit = (_hash01(wid, condition.seed) < condition.window_lit) & (wid > 0)
      warm = np.stack([np.ones(len(wid), np.float32),
                       0.75 + 0.2 * _hash01(wid, condition.seed + 1),
                       0.45 + 0.4 * _hash01(wid, condition.seed + 2)], -1)
      inten = 0.2 + 0.35 * _hash01(wid, condition.seed + 3)
      e += g * (lit * inten)[:, None] * warm
      sign = (mat == _M_SIGN) & (_hash01(wid, condition.seed + 4) < 0.7)
      e[sign] += a[sign] * 0.6 * condition.lamps_on
      e[mat == _M_HEAD] += 1.5 * condition.lamps_on
      e[mat == _M_TAIL] += np.array([0.9, 0.05, 0.05], np.float32) * condition.lamps_on
      emis[m] = e
  m = np.flatnonzero(ks == _K_CYL)
  if len(m):
    ci = obj[solid[m]]
    kd = city.cyl[ci, 5].astype(int)
    cols_c = np.array([(0.28, 0.2, 0.14), (0.22, 0.23, 0.24), (0.75, 0.75, 0.7)], np.float32)
    alb[m] = _srgb_to_linear(cols_c[kd])
    dxy = np.stack([px[m] - city.cyl[ci, 0], py[m] - city.cyl[ci, 1]], -1)
    normal[m, :2] = dxy / np.maximum(np.linalg.norm(dxy, axis=1, keepdims=True), 1e-6)
    if condition.lamps_on > 0:
      emis[m] += (kd == 2)[:, None] * np.array([1.6, 1.4, 1.0], np.float32) * condition.lamps_on
  m = np.flatnonzero(ks == _K_CROWN)
  if len(m):
    ci = obj[solid[m]]
    var = _hash01(city.crowns[ci, 5].astype(np.int64), 7)[:, None]
    base = {"summer": (0.2, 0.38, 0.12), "autumn": (0.75, 0.42, 0.1),
            "winter": (0.32, 0.27, 0.22)}[condition.season]
    shade = _sample_noise(_noise(2), px[m] * 9.0, pz[m] * 9.0)[:, None]
    alb[m] = _srgb_to_linear(np.array(base, np.float32) * (0.7 + 0.6 * var) * (0.6 + 0.8 * shade))
    cr = city.crowns[ci]
    nn = np.stack([(px[m] - cr[:, 0]) / cr[:, 2], (py[m] - cr[:, 1]) / cr[:, 2],
                   (pz[m] - cr[:, 3]) / cr[:, 4]], -1)
    normal[m] = nn / np.maximum(np.linalg.norm(nn, axis=1, keepdims=True), 1e-6)
  m = np.flatnonzero(ks == _K_GROUND)
  if len(m):
    alb[m] = _ground_albedo(city, px[m], py[m], condition)
    normal[m] = (0.0, 0.0, 1.0)

  # Ambient, direct sun with cast shadows, street lamps.
  light = np.empty((len(solid), 3), np.float32)
  light[:] = np.array(condition.ambient, np.float32)
  if sun_c.any():
    ndl = np.clip(normal @ sun, 0.0, None)
    vis = _sun_visibility(city, px, py, pz, sun, ndl > 0)
    light += (ndl * vis)[:, None] * sun_c
  if condition.lamps_on > 0 and len(city.lamps):
    near = np.flatnonzero(np.linalg.norm(city.lamps[:, :2] - cpos, axis=1) < 90)
    if len(near):
      P = np.stack([px, py, pz], -1).astype(np.float32)
      acc = np.zeros(len(P), np.float32)
      for li in near:
        L = city.lamps[li].astype(np.float32) - P
        d2 = np.einsum("ij,ij->i", L, L)
        cosn = np.clip(np.einsum("ij,ij->i", normal, L), 0, None) / np.sqrt(d2 + 1e-6)
        acc += cosn * 1.4 / (1.0 + d2 / 9.0)
      light += acc[:, None] * (np.array([1.0, 0.8, 0.55], np.float32) * condition.lamps_on)
  col_solid = alb * light + emis
  # Aerial perspective / fog.
  trans = np.exp(-(td * dn[cs]) / condition.fog_distance).astype(np.float32)[:, None]
  fogc = np.array(condition.fog_colour, np.float32) * (0.5 if condition.night else 1.0)
  out = np.empty((N, 3), np.float32)
  out[solid] = col_solid * trans + fogc * (1 - trans)

  # Sky: gradient, clouds on a plane 300 m up, sun glow.
  sk = np.flatnonzero(sky)
  if len(sk):
    us = pc[sk]
    up = (cy - pr[sk]) / f / dn[us]
    el = np.arctan(np.maximum(up, 0.0))
    w = np.sqrt(np.clip(el / (math.pi / 2), 0, 1))[:, None]
    col = (np.array(condition.sky_horizon, np.float32) * (1 - w) +
           np.array(condition.sky_zenith, np.float32) * w)
    if condition.cloud_cover > 0:
      kk = 300.0 / np.maximum(up, 0.05)
      ox, oy = _rng(condition.seed, "clouds").uniform(0, 2560, 2)
      cn = _sample_noise(_noise(12), (Dn[us, 0] * kk + ox) / 10.0, (Dn[us, 1] * kk + oy) / 10.0)
      cover = np.clip((cn - (0.75 - 0.5 * condition.cloud_cover)) * 5.0, 0, 1)[:, None]
      col = col * (1 - cover) + np.array(condition.cloud_colour, np.float32) * cover
    if sun_c.any():
      ray = np.stack([Dn[us, 0] * np.cos(el), Dn[us, 1] * np.cos(el), np.sin(el)], -1)
      col = col + (np.clip(ray @ sun, 0, 1) ** 64)[:, None] * 1.5
    out[sk] = col
  out = out.reshape(H, W, 3)
  # Lamp halos.
  if condition.lamps_on > 0 and len(city.lamps) and not camera.panorama:
    rel = city.lamps[:, :2] - cpos
    zc = rel @ fwd
    xr = rel @ right
    dmap = depth.reshape(H, W)
    for li in np.flatnonzero((zc > 1.0) & (zc < 80.0)):
      u = W / 2 + f * xr[li] / zc[li]
      v = cy - f * (city.lamps[li, 2] - h) / zc[li]
      rad = max(1.0, 0.9 * f / zc[li])
      if not (-3 * rad < u < W + 3 * rad and -3 * rad < v < H + 3 * rad):
        continue
      ui, vi = int(np.clip(u, 0, W - 1)), int(np.clip(v, 0, H - 1))
      if dmap[vi, ui] < zc[li] - 1.0:
        continue
      y0, y1 = int(max(0, v - 3 * rad)), int(min(H, v + 3 * rad + 1))
      x0, x1 = int(max(0, u - 3 * rad)), int(min(W, u + 3 * rad + 1))
      yy = (np.arange(y0, y1) + 0.5 - v)[:, None]
      xx = (np.arange(x0, x1) + 0.5 - u)[None, :]
      glow = np.exp(-(xx ** 2 + yy ** 2) / (2 * rad ** 2)).astype(np.float32)
      out[y0:y1, x0:x1] += glow[..., None] * (np.array([0.8, 0.65, 0.4], np.float32) * 0.5 *
                                              condition.lamps_on)
  # Camera response: exposure, white balance (per traversal, with per-image auto-exposure and
  # auto-white-balance jitter), gamma, saturation, contrast, sensor noise.
  rng = _rng(condition.seed, "image", seed)
  gain = condition.exposure * math.exp(rng.normal(0.0, 0.1))
  wb = np.array(condition.white_balance) * np.exp(rng.normal(0.0, 0.03, 3))
  out = out * (gain * wb).astype(np.float32)
  if ss > 1:
    out = out.reshape(height, ss, width, ss, 3).mean((1, 3))
  out = np.clip(out, 0, None) ** np.float32(1.0 / condition.gamma)
  lum = out.mean(-1, keepdims=True)
  out = lum + (out - lum) * condition.saturation
  out = 0.5 + (out - 0.5) * condition.contrast
  out = out + rng.normal(0.0, condition.noise, out.shape) + rng.normal(
      0.0, condition.noise * 0.5, (height, width, 1))
  return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _ground_albedo(city: City, x: np.ndarray, y: np.ndarray, cond: Condition) -> np.ndarray:
  """Linear albedo of ground points: asphalt, markings, crossings, curbs, sidewalks."""
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
  sv = np.array([s.sidewalk for s in vs])[iv]
  sh = np.array([s.sidewalk for s in hs])[ih]
  lat_v = dv[np.arange(len(x)), iv] - rv  # < 0 inside the road of the nearest N-S street
  lat_h = dh[np.arange(len(x)), ih] - rh
  road = (lat_v < 0) | (lat_h < 0)
  walk = ~road & ((lat_v < sv) | (lat_h < sh))
  n1 = _sample_noise(_noise(6), x * 2.0, y * 2.0)
  n2 = _sample_noise(_noise(2), x * 8.0, y * 8.0)
  on_v = lat_v < 0
  street_id = np.where(on_v, iv, len(vs) + ih)
  tone = city.asphalt[street_id] * (0.85 + 0.3 * n1) * (0.92 + 0.16 * n2)
  alb = np.empty((len(x), 3), np.float32)
  alb[:] = (np.array([0.33, 0.33, 0.34], np.float32)[None, :] * tone[:, None])
  # Markings: dashed centre lines (outside intersections) and zebra crossings.
  in_inter = (lat_v < sv) & (lat_h < sh)
  mark = np.zeros(len(x), bool)
  cv_ = (lat_v < 0) & ~in_inter & (np.abs(x - vx[iv]) < 0.09) & ((y % 6.0) < 3.0)
  ch_ = (lat_h < 0) & ~in_inter & (np.abs(y - hy[ih]) < 0.09) & ((x % 6.0) < 3.0)
  mark |= cv_ | ch_
  cross = city.crossing[iv, ih]
  zv = (lat_v < 0) & (lat_h >= sh + 0.5) & (lat_h < sh + 3.5) & (((x - vx[iv]) % 1.2) < 0.6) & cross
  zh = (lat_h < 0) & (lat_v >= sv + 0.5) & (lat_v < sv + 3.5) & (((y - hy[ih]) % 1.2) < 0.6) & cross
  mark |= zv | zh
  alb[mark] = 0.8
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
  if cond.season == "winter":
    snow = 0.82 * (0.95 + 0.1 * n2)
    alb[walk | other | curb] = snow[walk | other | curb, None]
    # Slush on the road with darker wheel tracks where traffic runs.
    lat_c = np.where(on_v, x - vx[iv], y - hy[ih])
    lane = np.abs(np.abs(lat_c) - 1.6)
    track = (np.abs(lane - 0.8) < 0.35)
    slush = np.where(track, 0.47, 0.6) * (0.9 + 0.2 * n1)
    alb[road] = slush[road, None]
  elif cond.season == "autumn":
    leaves = (n2 > 0.62) & (walk | (road & (np.minimum(np.abs(lat_v), np.abs(lat_h)) < 1.0)))
    alb[leaves] = np.array([0.7, 0.38, 0.08], np.float32)
  if cond.wet:
    alb[road] *= 0.55
  return _srgb_to_linear(alb).astype(np.float32)


def _sun_visibility(city: City, x: np.ndarray, y: np.ndarray, z: np.ndarray, sun: np.ndarray,
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


# ---------------------------------------------------------------------------------------------
# Traversals
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Sequence:
  side: str  # "query" or "database"
  street: int
  drive_sign: int  # +1 along increasing `along`, -1 decreasing
  view: str  # "Forward", "Backward", "Sideways"
  view_offset: float  # heading offset from the driving direction (0, 180, +-90)
  lateral: float  # lane centre, metres east/north of the street centreline
  along: np.ndarray  # frame positions along the street
  condition: str
  panorama: bool = False


def _plan_city(config: WorldConfig, city: City) -> list[_Sequence]:
  """The traversals of one city (database first, then queries)."""
  rng = _rng(config.seed, "plan", city.name)
  sp = config.frame_spacing_m
  seqs = []

  def pick(pairs):
    names = [n for n, _ in pairs]
    w = np.array([w for _, w in pairs], float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]

  def frames(st: Street, a0: float, a1: float, sign: int, spacing: float) -> np.ndarray:
    phase = rng.uniform(0, spacing)
    a = np.arange(a0 + phase, a1, spacing)
    return a if sign > 0 else a[::-1]

  def lane(st: Street, sign: int) -> float:
    # Right-hand traffic: the lane is right of the driving direction. Right of +along is
    # +x/-y for N-S/E-W streets.
    right = 1.0 if st.axis == 0 else -1.0
    off = rng.uniform(1.3, max(1.35, st.road_half - 3.3))
    return sign * right * off

  def view_for(st: Street, target: str) -> tuple[int, str, float]:
    """Driving sign, view name and heading offset that look along `target`:
    'inc'/'dec' (along the street) or 'left_side'/'right_side' (facing the -/+ lateral side)."""
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

  for _ in range(config.database_passes):
    for si, st in enumerate(city.streets):
      for target in ("inc", "dec", "left_side", "right_side"):
        sign, view, voff = view_for(st, target)
        seqs.append(_Sequence("database", si, sign, view, voff, lane(st, sign),
                              frames(st, st.start, st.end, sign, sp),
                              pick(config.database_conditions)))
  n_db = sum(len(s.along) for s in seqs)
  n_pano = int(round(config.panorama_fraction * n_db))
  while n_pano > 0:
    si = int(rng.integers(len(city.streets)))
    st = city.streets[si]
    sign = 1 if rng.random() < 0.5 else -1
    a = frames(st, st.start, st.end, sign, 2 * sp)[:n_pano]
    seqs.append(_Sequence("database", si, sign, "Forward", 0.0, lane(st, sign), a,
                          pick(config.database_conditions), panorama=True))
    n_pano -= len(a)
  n_query = (config.train_query_sequences if city.name in config.train_cities else
             config.query_sequences)
  for _ in range(n_query):
    si = int(rng.integers(len(city.streets)))
    st = city.streets[si]
    target = rng.choice(["inc", "dec", "left_side", "right_side"], p=[0.33, 0.33, 0.17, 0.17])
    sign, view, voff = view_for(st, str(target))
    frac = rng.uniform(0.25, 0.55)
    a0 = st.start + rng.uniform(0, 1 - frac) * st.length
    lat = lane(st, sign) + rng.uniform(-config.query_lane_shift_m, config.query_lane_shift_m)
    lat = float(np.clip(lat, -(st.road_half - 3.1), st.road_half - 3.1))
    seqs.append(_Sequence("query", si, sign, view, voff, lat,
                          frames(st, a0, a0 + frac * st.length, sign, sp),
                          pick(config.query_conditions)))
  return seqs


def _cameras(config: WorldConfig, city: City, seq: _Sequence,
             rng: np.random.Generator) -> list[Camera]:
  st = city.streets[seq.street]
  jit = config.query_jitter if seq.side == "query" else config.database_jitter
  drive = st.heading + (0.0 if seq.drive_sign > 0 else 180.0)
  cams = []
  n = len(seq.along)
  # Smooth lateral wander plus per-frame noise.
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


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


def _fmt_bool(b: bool) -> str:
  return "True" if b else "False"


def _write_csv(path: str, header: str, rows: list[list[str]]) -> None:
  with open(path, "w", newline="") as fh:
    fh.write(header + "\n")
    for i, r in enumerate(rows):
      fh.write(",".join([str(i)] + r) + "\n")


def _generate_city(config: WorldConfig, name: str, out_dir: str, used_keys: set,
                   progress_bar) -> dict:
  """Renders and writes one city; returns its sizes."""
  from gcl_jax.labels.utm import utm_to_latlon  # Lazy: only the writer needs it.

  city = build_city(config, name)
  seqs = _plan_city(config, city)
  if progress_bar is not None:
    progress_bar.total = (progress_bar.total or 0) + sum(len(q.along) for q in seqs)
    progress_bar.set_postfix_str(name)
    progress_bar.refresh()
  key_rng = _rng(config.seed, "keys", name)
  rows = {"query": [], "database": []}
  for side in rows:
    os.makedirs(os.path.join(out_dir, "train_val", name, side, "images"), exist_ok=True)
  base_time = 1_400_000_000_000 + (zlib.crc32(name.encode()) % 1000) * 86_400_000
  for qi, seq in enumerate(seqs):
    srng = _rng(config.seed, name, "sequence", qi)
    cond = make_condition(seq.condition, int(srng.integers(0, 2 ** 31)),
                          int(srng.integers(0, config.epochs)))
    st = city.streets[seq.street]
    cams = _cameras(config, city, seq, srng)
    tr = make_transients(city, st, seq.lateral, config.occluder_density, srng)
    seq_key = _random_keys(key_rng, 1)[0]
    keys = _random_keys(key_rng, len(cams))
    t0 = base_time + qi * 3_600_000 + (0 if seq.side == "database" else 365 * 86_400_000)
    for k, (cam, key) in enumerate(zip(cams, keys)):
      if key in used_keys or seq_key in used_keys:
        raise RuntimeError("random key collision; change the seed")
      used_keys.add(key)
      img = render_view(city, cam, cond, config.image_height, config.image_width,
                        transients=tr, supersample=config.supersample, seed=k)
      path = os.path.join(out_dir, "train_val", name, seq.side, "images", key + ".jpg")
      Image.fromarray(img).save(path, format="JPEG", quality=config.jpeg_quality)
      rows[seq.side].append((key, seq_key, k, cam, seq, cond, t0 + k * 1000))
      if progress_bar is not None:
        progress_bar.update(1)
    used_keys.add(seq_key)
  sizes = {}
  for side, items in rows.items():
    d = os.path.join(out_dir, "train_val", name, side)
    if not items:
      raise ValueError(f"city {name!r} has no {side} images (query_sequences = 0?)")
    east = np.array([city.origin[0] + it[3].x for it in items])
    north = np.array([city.origin[1] + it[3].y for it in items])
    lat, lon = utm_to_latlon(east, north, _UTM_ZONE, True)
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    raw, post, seq_rows, sub = [], [], [], []
    for i, (key, seq_key, k, cam, seq, cond, ts) in enumerate(items):
      ca = round(cam.heading_deg, 4) % 360.0  # Never "360.0000" after formatting.
      raw.append([key, f"{lon[i]:.8f}", f"{lat[i]:.8f}", f"{ca:.4f}", str(ts),
                  _fmt_bool(cam.panorama)])
      post.append([key, f"{east[i]:.3f}", f"{north[i]:.3f}", str(seq.street), "False",
                   _fmt_bool(cond.night), seq.view])
      seq_rows.append([key, seq_key, str(k)])
      is_q = side == "query"
      sub.append([key, "True", _fmt_bool(is_q and cond.season == "winter"), "False", "False",
                  "False", "False", _fmt_bool(is_q and cond.night)])
    _write_csv(os.path.join(d, "raw.csv"), ",key,lon,lat,ca,captured_at,pano", raw)
    _write_csv(os.path.join(d, "postprocessed.csv"),
               ",key,easting,northing,unique_cluster,control_panel,night,view_direction", post)
    _write_csv(os.path.join(d, "seq_info.csv"), ",key,sequence_key,frame_number", seq_rows)
    _write_csv(os.path.join(d, "subtask_index.csv"), ",key,all,s2w,w2s,o2n,n2o,d2n,n2d", sub)
    sizes[side] = len(items)
  sizes["panoramas"] = sum(1 for it in rows["database"] if it[3].panorama)
  return sizes


def plan_sizes(config: WorldConfig) -> dict[str, dict[str, int]]:
  """Image counts per city and side, without rendering anything."""
  out = {}
  for name in config.train_cities + config.val_cities:
    city = build_city(config, name)
    seqs = _plan_city(config, city)
    out[name] = {side: sum(len(s.along) for s in seqs if s.side == side)
                 for side in ("query", "database")}
  return out


def _read_marker(root: str) -> dict | None:
  """The parsed root/world.json, or None when it is missing or unreadable."""
  try:
    with open(os.path.join(root, "world.json")) as fh:
      have = json.load(fh)
  except (OSError, ValueError):
    return None
  return have if isinstance(have, dict) else None


def _matches(have: dict | None, want: dict) -> bool:
  return (have is not None and have.get("format_version") == want["format_version"]
          and have.get("config") == want["config"])


def _remove_stale(parent: str, base: str) -> None:
  """Removes temporary siblings (.<base>.tmp-<pid>, .<base>.old-<pid>) of dead processes."""
  for entry in os.listdir(parent):
    for tag in (".tmp-", ".old-"):
      prefix = f".{base}{tag}"
      if entry.startswith(prefix) and entry[len(prefix):].isdigit():
        pid = int(entry[len(prefix):])
        if pid != os.getpid():  # Our own pid: a leftover of an earlier call, remove it.
          try:
            os.kill(pid, 0)
            continue  # That process is still running (maybe writing the same world).
          except ProcessLookupError:
            pass
          except PermissionError:
            continue
        shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def generate_world(root: str, config: WorldConfig = WorldConfig(), *,
                   progress: bool = True) -> str:
  """Writes the synthetic world under `root` in the MSLS layout, once; returns `root`.

  An existing world is reused when root/world.json records the same config (and format
  version). Otherwise the world is generated into a temporary sibling directory
  (.<name>.tmp-<pid>), world.json is written last, and the directory is renamed into place, so an
  interrupted run never leaves a half world that looks complete (leftovers of killed runs are
  removed by the next call). An existing `root` is replaced only if it is a world (it has a
  world.json) or empty; any other existing directory raises an error rather than being deleted.
  If another process finishes the same world first, its copy is kept.

  Args:
    root: output directory (local path).
    config: the world to build.
    progress: show a tqdm progress bar.

  Returns:
    `root`.

  Raises:
    TypeError: `config` is not a WorldConfig.
    FileExistsError: `root` exists, is not empty and is not a synthetic world.
  """
  if not isinstance(config, WorldConfig):
    raise TypeError(f"config must be a WorldConfig, got {type(config).__name__}")
  root = os.fspath(root).rstrip("/") or "/"
  want = {"format_version": FORMAT_VERSION, "config": config.to_json_dict()}

  def check_root() -> bool:
    """True if root already holds this world; raises if root is something else."""
    if os.path.isdir(root):
      if os.path.isfile(os.path.join(root, "world.json")):
        return _matches(_read_marker(root), want)
      if os.listdir(root):
        raise FileExistsError(
            f"{root}: exists and is not a synthetic world (no world.json); refusing to overwrite "
            "it. Remove it or choose another directory.")
    elif os.path.exists(root):
      raise FileExistsError(f"{root}: exists and is not a directory")
    return False

  if check_root():
    return root
  parent = os.path.dirname(os.path.abspath(root))
  base = os.path.basename(os.path.abspath(root))
  os.makedirs(parent, exist_ok=True)
  _remove_stale(parent, base)
  tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}")
  os.makedirs(tmp)
  bar = None
  try:
    if progress:
      from tqdm.auto import tqdm
      bar = tqdm(total=0, desc="synthetic world", unit="img")
    used: set = set()
    sizes = {}
    for name in config.train_cities + config.val_cities:
      sizes[name] = _generate_city(config, name, tmp, used, bar)
    want["cities"] = sizes
    want["train_cities"] = list(config.train_cities)
    want["val_cities"] = list(config.val_cities)
    with open(os.path.join(tmp, "world.json"), "w") as fh:
      json.dump(want, fh, indent=1, sort_keys=True)
      fh.write("\n")
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  finally:
    if bar is not None:
      bar.close()
  try:
    if check_root():  # Another process finished the same world meanwhile.
      shutil.rmtree(tmp, ignore_errors=True)
      return root
    old = None
    if os.path.isdir(root):
      old = os.path.join(parent, f".{base}.old-{os.getpid()}")
      os.rename(root, old)
    os.rename(tmp, root)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
  return root


# ---------------------------------------------------------------------------------------------
# Quality check
# ---------------------------------------------------------------------------------------------


def _read_side(root: str, city: str, side: str) -> dict[str, np.ndarray]:
  """Keys, UTM, heading, pano and night flags of one city side (plain csv; no TensorFlow)."""
  import csv
  base = os.path.join(root, "train_val", city, side)
  with open(os.path.join(base, "raw.csv"), newline="") as fh:
    raw = list(csv.DictReader(fh))
  with open(os.path.join(base, "postprocessed.csv"), newline="") as fh:
    post = list(csv.DictReader(fh))
  return {
      "paths": np.array([os.path.join(base, "images", r["key"] + ".jpg") for r in raw]),
      "utm": np.array([(float(r["easting"]), float(r["northing"])) for r in post]),
      "heading": np.array([float(r["ca"]) for r in raw]),
      "pano": np.array([r["pano"] == "True" for r in raw]),
      "night": np.array([r["night"] == "True" for r in post]),
  }


def thumbnail_descriptor(image: np.ndarray | Image.Image, size: tuple[int, int] = (8, 12)
                         ) -> np.ndarray:
  """Raw RGB thumbnail in [0, 1] (PIL bilinear), flattened: the trivial retrieval baseline."""
  im = image if isinstance(image, Image.Image) else Image.fromarray(image)
  small = im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
  return np.asarray(small, np.float32).reshape(-1) / 255.0


def structure_descriptor(image: np.ndarray | Image.Image, cells: tuple[int, int] = (4, 6),
                         bins: int = 8) -> np.ndarray:
  """A crude hand-made structure descriptor: gradient-orientation histograms on a coarse grid.

  Grey image, central-difference gradients, unsigned orientation in `bins` bins weighted by
  magnitude, one histogram per cell of a `cells` grid, normalised by the image's total gradient
  magnitude (so exposure and contrast cancel), square-rooted and L2-normalised.
  """
  im = image if isinstance(image, Image.Image) else Image.fromarray(image)
  g = np.asarray(im.convert("L"), np.float32)
  gx = np.zeros_like(g)
  gy = np.zeros_like(g)
  gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
  gy[1:-1, :] = g[2:, :] - g[:-2, :]
  mag = np.sqrt(gx ** 2 + gy ** 2)
  ori = np.mod(np.arctan2(gy, gx), np.pi)
  b = np.minimum((ori / np.pi * bins).astype(np.int64), bins - 1)
  ch, cw = cells
  H, W = g.shape
  ri = np.minimum(np.arange(H) * ch // H, ch - 1)[:, None]
  ci = np.minimum(np.arange(W) * cw // W, cw - 1)[None, :]
  hist = np.zeros(ch * cw * bins, np.float64)
  np.add.at(hist, ((ri * cw + ci) * bins + b).reshape(-1), mag.reshape(-1))
  hist = np.sqrt(hist / (hist.sum() + 1e-6))
  return (hist / (np.linalg.norm(hist) + 1e-12)).astype(np.float32)


def world_stats(root: str, city: str | None = None, *, radius_m: float = 25.0
                ) -> dict[str, float]:
  """Retrieval sanity numbers of one city of a generated world.

  Positives of a query are the non-panoramic database images within `radius_m`; queries without
  any are excluded from the recalls. Reports Recall@1/5/10 of the raw 8 x 12 RGB thumbnail (L2;
  the baseline a learned model must beat) and of `structure_descriptor` (cosine; evidence that
  structure, not colour, identifies places), the fraction of queries that have a positive, and how
  much the positives share the query's view (heading within 45 degrees; 2-D FoV overlap psi with
  r = 50 m, 90 degrees).

  Args:
    root: the world's root directory.
    city: the city to measure; default: the first validation city in root/world.json.
    radius_m: positive radius.
  """
  from scipy.spatial import cKDTree
  if city is None:
    meta = _read_marker(root)
    if not meta or not meta.get("val_cities"):
      raise ValueError(f"{root}: no world.json with val_cities; pass `city`")
    city = meta["val_cities"][0]
  q = _read_side(root, city, "query")
  db = _read_side(root, city, "database")
  keep = ~db["pano"]
  db_idx = np.flatnonzero(keep)
  tree = cKDTree(db["utm"][db_idx])
  pos = [set(db_idx[j].tolist()) for j in tree.query_ball_point(q["utm"], radius_m)]
  has = np.array([len(p) > 0 for p in pos])
  out = {"queries": float(len(q["paths"])), "database": float(len(db["paths"])),
         "database_panoramas": float(db["pano"].sum()), "queries_with_positive": float(has.mean()),
         "mean_positives": float(np.mean([len(p) for p in pos]))}
  same_view, any_same = [], []
  for i, p in enumerate(pos):
    if not p:
      continue
    dh = np.abs((db["heading"][list(p)] - q["heading"][i] + 180.0) % 360.0 - 180.0)
    same_view.append(float(np.mean(dh < 45.0)))
    any_same.append(bool(np.any(dh < 45.0)))
  out["positives_same_view_fraction"] = float(np.mean(same_view)) if same_view else 0.0
  out["queries_with_same_view_positive"] = float(np.mean(any_same)) if any_same else 0.0
  # Field-of-view overlap (the labeller's 2-D sector model, r = 50 m, 90 degrees).
  from gcl_jax.labels.fov2d import fov_overlap
  psi_pos, best = [], []
  for i, p in enumerate(pos):
    if p:
      j = np.array(sorted(p))
      psi = fov_overlap(q["utm"][i][None], q["heading"][i][None], db["utm"][j], db["heading"][j])
      psi_pos.append(psi)
      best.append(psi.max())
  if psi_pos:
    allpsi = np.concatenate(psi_pos)
    out["positives_with_fov_overlap"] = float(np.mean(allpsi > 0))
    out["queries_with_psi_ge_0.5_positive"] = float(np.mean(np.array(best) >= 0.5))

  def load(paths):
    ims = []
    for p in paths:
      with Image.open(p) as im:
        ims.append(im.convert("RGB"))
    return ims

  q_ims, db_ims = load(q["paths"]), load(db["paths"][db_idx])
  for name, fn, metric in (("thumbnail", thumbnail_descriptor, "l2"),
                           ("structure", structure_descriptor, "cos")):
    qd = np.stack([fn(im) for im in q_ims])
    dd = np.stack([fn(im) for im in db_ims])
    if metric == "l2":
      dist = (qd ** 2).sum(1)[:, None] - 2 * qd @ dd.T + (dd ** 2).sum(1)[None, :]
    else:
      dist = -qd @ dd.T
    rank = np.argsort(dist, axis=1)[:, :20]
    for k in (1, 5, 10):
      hit = [bool(set(db_idx[rank[i, :k]].tolist()) & pos[i]) for i in np.flatnonzero(has)]
      out[f"{name}_r@{k}"] = float(np.mean(hit)) if hit else 0.0
  night = q["night"][has]
  out["night_queries"] = float(night.mean()) if len(night) else 0.0
  return out


if __name__ == "__main__":
  import argparse
  import time
  parser = argparse.ArgumentParser(description="Generate the synthetic MSLS world and print the "
                                   "validation city's sanity numbers.")
  parser.add_argument("root", help="output directory")
  parser.add_argument("--config", default="{}", help="JSON dict of WorldConfig overrides")
  args = parser.parse_args()
  cfg = WorldConfig(**json.loads(args.config))
  t0 = time.perf_counter()
  generate_world(args.root, cfg)
  print(json.dumps({"seconds": round(time.perf_counter() - t0, 1)}))
  for c in cfg.val_cities:
    print(json.dumps({"city": c, **{k: round(v, 4) for k, v in world_stats(args.root, c).items()}}))

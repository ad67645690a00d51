"""Procedural textures of the synthetic world: facades, cars, pedestrians and the texture atlas.

Every texture is painted on a `Canvas` in texels at `PPM` texels per metre (row 0 = ground
level). Besides colour, each texel carries a material code (`M_*`), a glass coverage (lit at
night, reflecting the sky by day), a snow-catching coverage (winter), a window/sign id (which
windows are lit, which signs are repainted) and an opacity. `pack_atlas` packs all canvases of a
city into one mip-mapped strip that the renderer samples.

Every function draws from the generator it is given, in a fixed order: the painted textures are a
deterministic function of that generator's state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from gcl_jax.synthetic.common import ATLAS_HEIGHT_M, LEVELS, PPM, noise

# Material codes of atlas texels.
M_WALL, M_GLASS, M_FRAME, M_DOOR, M_SIGN, M_AWNING, M_ROOF, M_BALCONY = range(8)
M_CAR, M_CARGLASS, M_TYRE, M_TAIL, M_HEAD, M_PERSON = range(8, 14)

WALL_COLOURS = np.array([
    (0.80, 0.72, 0.58), (0.88, 0.84, 0.72), (0.62, 0.33, 0.25), (0.47, 0.27, 0.21),
    (0.60, 0.60, 0.60), (0.90, 0.89, 0.86), (0.80, 0.62, 0.35), (0.65, 0.72, 0.60),
    (0.62, 0.70, 0.78), (0.82, 0.64, 0.62), (0.36, 0.37, 0.39), (0.52, 0.42, 0.32),
    (0.74, 0.70, 0.66), (0.70, 0.52, 0.40)], np.float32)
ACCENT_COLOURS = np.array([
    (0.95, 0.94, 0.90), (0.25, 0.25, 0.27), (0.55, 0.50, 0.45), (0.75, 0.70, 0.60),
    (0.40, 0.22, 0.18), (0.30, 0.40, 0.35)], np.float32)
SIGN_COLOURS = np.array([
    (0.80, 0.10, 0.10), (0.10, 0.25, 0.70), (0.10, 0.55, 0.25), (0.95, 0.80, 0.10),
    (0.08, 0.08, 0.08), (0.95, 0.95, 0.95), (0.60, 0.15, 0.55), (0.95, 0.45, 0.05)], np.float32)
ROOF_COLOURS = np.array([
    (0.60, 0.27, 0.18), (0.30, 0.30, 0.33), (0.42, 0.30, 0.24), (0.22, 0.30, 0.30)], np.float32)
CAR_COLOURS = np.array([
    (0.85, 0.85, 0.85), (0.1, 0.1, 0.1), (0.5, 0.5, 0.52), (0.7, 0.1, 0.1), (0.1, 0.2, 0.5),
    (0.9, 0.9, 0.92), (0.2, 0.35, 0.25), (0.6, 0.55, 0.4), (0.95, 0.75, 0.1)], np.float32)

ATLAS_HEIGHT_PX = int(ATLAS_HEIGHT_M * PPM)  # Rows of every canvas and of the atlas.


class Canvas:
  """One texture being painted, in texels at PPM (row 0 = ground level)."""

  def __init__(self, width_m: float, height_px: int):
    self.w = max(8, int(math.ceil(width_m * PPM)))
    self.w += (-self.w) % (2 ** (LEVELS - 1))
    self.h = height_px
    self.width_m = width_m
    self.rgb = np.zeros((self.h, self.w, 3), np.float32)
    self.glass = np.zeros((self.h, self.w), np.float32)
    self.snow = np.zeros((self.h, self.w), np.float32)
    self.mat = np.zeros((self.h, self.w), np.uint8)
    self.wid = np.zeros((self.h, self.w), np.int32)
    self.alpha = np.zeros((self.h, self.w), bool)

  def sl(self, z0: float, z1: float, s0: float, s1: float) -> tuple[slice, slice]:
    """(rows, columns) slices of the rectangle [z0, z1] x [s0, s1] metres, clipped."""
    r0 = int(np.clip(round(z0 * PPM), 0, self.h))
    r1 = int(np.clip(round(z1 * PPM), r0, self.h))
    c0 = int(np.clip(round(s0 * PPM), 0, self.w))
    c1 = int(np.clip(round(s1 * PPM), c0, self.w))
    return slice(r0, r1), slice(c0, c1)

  def rect(self, z0, z1, s0, s1, colour, mat, *, glass=0.0, wid=0, snow_top=False,
           alpha=True) -> None:
    """Paints a rectangle of one colour and material (heights z, positions s in metres)."""
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


def jitter_colour(rng: np.random.Generator, c: np.ndarray, amount: float = 0.06) -> np.ndarray:
  """`c` with a random brightness and per-channel offset of about `amount`."""
  return np.clip(c * (1.0 + rng.uniform(-amount, amount)) + rng.uniform(-amount, amount, 3) * 0.5,
                 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------


def _window_style(rng: np.random.Generator, wall: np.ndarray, accent: np.ndarray) -> dict:
  """The window style of one building (what makes facades distinctive)."""
  return {
      "wall": wall, "accent": accent,
      "frame_t": float(rng.choice([0.08, 0.12, 0.16])),
      "frame_colour": jitter_colour(rng, ACCENT_COLOURS[rng.integers(len(ACCENT_COLOURS))]),
      "glass_colour": np.array([0.16, 0.2, 0.26], np.float32) * rng.uniform(0.7, 1.4),
      "blind_colour": jitter_colour(rng, np.array([0.85, 0.82, 0.72], np.float32)),
      "blind_prob": float(rng.uniform(0.0, 0.5)),
      "shutters": rng.random() < 0.15,
      "shutter_colour": jitter_colour(rng, np.array(
          [(0.2, 0.4, 0.25), (0.45, 0.3, 0.2), (0.25, 0.35, 0.55)][rng.integers(3)], np.float32)),
      "mullion": rng.random() < 0.45, "transom": rng.random() < 0.5,
      "arch": rng.random() < 0.12, "sill": rng.random() < 0.6,
  }


def _round_window_top(cv: Canvas, st: dict, z0: float, s0: float, w: float, h: float) -> None:
  """Rounds the top corners of a window with wall colour (an arch)."""
  rs, cs = cv.sl(z0 + h - w / 2, z0 + h, s0, s0 + w)
  if rs.stop > rs.start and cs.stop > cs.start:
    zz = (np.arange(rs.start, rs.stop) + 0.5) / PPM - (z0 + h - w / 2)
    ss = (np.arange(cs.start, cs.stop) + 0.5) / PPM - (s0 + w / 2)
    out = (zz[:, None] ** 2 + ss[None, :] ** 2) > (w / 2) ** 2
    sub = (rs, cs)
    cv.rgb[sub][out] = st["wall"]
    cv.mat[sub][out] = M_WALL
    cv.glass[sub][out] = 0.0
    cv.wid[sub][out] = 0


def paint_window(cv: Canvas, st: dict, z0: float, s0: float, w: float, h: float, wid: int,
                 rng: np.random.Generator) -> None:
  """A window of style `st` with frame, optional mullions, shutters, arch and sill."""
  ft = st["frame_t"]
  if st["shutters"]:
    cv.rect(z0, z0 + h, s0 - w * 0.45, s0, st["shutter_colour"], M_FRAME)
    cv.rect(z0, z0 + h, s0 + w, s0 + w * 1.45, st["shutter_colour"], M_FRAME)
  cv.rect(z0, z0 + h, s0, s0 + w, st["frame_colour"], M_FRAME)
  glass_colour = np.clip(st["glass_colour"] * rng.uniform(0.8, 1.25), 0, 1)
  if rng.random() < st["blind_prob"]:  # Blinds half-down (structural, same in every traversal).
    cut = z0 + ft + (h - 2 * ft) * rng.uniform(0.35, 0.8)
    cv.rect(z0 + ft, cut, s0 + ft, s0 + w - ft, glass_colour, M_GLASS, glass=1.0, wid=wid)
    cv.rect(cut, z0 + h - ft, s0 + ft, s0 + w - ft, st["blind_colour"], M_GLASS, glass=0.5,
            wid=wid)
  else:
    cv.rect(z0 + ft, z0 + h - ft, s0 + ft, s0 + w - ft, glass_colour, M_GLASS, glass=1.0, wid=wid)
  if st["mullion"]:
    cv.rect(z0, z0 + h, s0 + w / 2 - ft / 2, s0 + w / 2 + ft / 2, st["frame_colour"], M_FRAME)
    if st["transom"]:
      zt = z0 + h * 0.7
      cv.rect(zt - ft / 2, zt + ft / 2, s0, s0 + w, st["frame_colour"], M_FRAME)
  if st["arch"]:
    _round_window_top(cv, st, z0, s0, w, h)
  if st["sill"]:
    cv.rect(z0 - 0.12, z0, s0 - 0.1, s0 + w + 0.1, st["accent"], M_FRAME, snow_top=True)


# ---------------------------------------------------------------------------------------------
# Buildings
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Building:
  """A facade being painted, the measures its parts share and the next free window id."""

  cv: Canvas
  width_m: float
  style: str
  floors: int
  floor_h: float
  ground_h: float
  top: float  # Height of the top floor's floor.
  height: float  # Height of the wall (below the roof).
  wall: np.ndarray
  accent: np.ndarray
  next_wid: int
  win: dict = dataclasses.field(default_factory=dict)
  cols: list = dataclasses.field(default_factory=list)  # Left edges of the window columns.

  def take_wid(self) -> int:
    """The next free window id (and reserves it)."""
    self.next_wid += 1
    return self.next_wid - 1


def _start_building(rng: np.random.Generator, width_m: float, next_wid: int,
                    height_px: int) -> _Building:
  """Draws a building's style and measures and paints its bare wall."""
  cv = Canvas(width_m, height_px)
  style = rng.choice(["classic", "brick", "modern", "shops", "tower"],
                     p=[0.3, 0.2, 0.2, 0.2, 0.1])
  floors = int(rng.integers(2, 9)) if style != "tower" else int(rng.integers(6, 10))
  floor_h = float(rng.uniform(2.9, 3.6))
  ground_h = float(rng.uniform(3.3, 4.8))
  top = ground_h + (floors - 1) * floor_h
  parapet = float(rng.uniform(0.3, 1.4))
  height = min(top + parapet, ATLAS_HEIGHT_M - 6.0)
  wall = jitter_colour(rng, WALL_COLOURS[rng.integers(len(WALL_COLOURS))])
  if style == "brick":
    wall = jitter_colour(rng, WALL_COLOURS[rng.choice([2, 3, 11, 13])])
  accent = jitter_colour(rng, ACCENT_COLOURS[rng.integers(len(ACCENT_COLOURS))])
  # Wall with large-scale material variation.
  cv.rect(0.0, height, 0.0, width_m, wall, M_WALL)
  tex = noise(6)
  ou, ov = rng.integers(0, 256, 2)
  rr = np.arange(cv.h)[:, None] + ov
  cc = np.arange(cv.w)[None, :] + ou
  cv.rgb *= (0.9 + 0.2 * tex[rr % 256, cc % 256])[..., None]
  if style == "brick":  # Mortar courses every 2 texels (0.25 m), averaged away at distance.
    cv.rgb[1::2] *= 0.88
  return _Building(cv=cv, width_m=width_m, style=style, floors=floors, floor_h=floor_h,
                   ground_h=ground_h, top=top, height=height, wall=wall, accent=accent,
                   next_wid=next_wid)


def _paint_curtain_wall(rng: np.random.Generator, b: _Building) -> None:
  """A tower's curtain wall: glass panels with mullions over the upper floors."""
  glass = np.array([(0.2, 0.32, 0.38), (0.25, 0.3, 0.35), (0.15, 0.22, 0.3),
                    (0.35, 0.38, 0.4)][rng.integers(4)], np.float32)
  panel = float(rng.uniform(1.2, 2.5))
  mull = float(rng.choice([0.12, 0.2, 0.3]))
  mcol = jitter_colour(rng, ACCENT_COLOURS[rng.integers(len(ACCENT_COLOURS))])
  b.cv.rect(b.ground_h, b.top, 0.0, b.width_m, mcol, M_FRAME)
  s = 0.3
  while s + panel <= b.width_m - 0.3 + 1e-6:
    for f in range(b.floors - 1):
      z = b.ground_h + f * b.floor_h
      b.cv.rect(z + mull, z + b.floor_h - mull, s + mull / 2, s + panel - mull / 2,
                glass * rng.uniform(0.85, 1.15), M_GLASS, glass=1.0, wid=b.next_wid)
      b.next_wid += 1
    s += panel


@dataclasses.dataclass(frozen=True)
class _WindowGrid:
  """Measures of a regular window grid (columns are in `_Building.cols`)."""

  win_w: float
  win_h: float
  sill_z: float
  gap: float
  skip: np.ndarray  # (columns,) bool: column left blank


def _window_grid(rng: np.random.Generator, b: _Building) -> _WindowGrid:
  """Draws the window grid of the upper floors and stores its columns in `b.cols`."""
  ribbon = b.style == "modern" and rng.random() < 0.5
  if ribbon:
    win_w = float(rng.uniform(2.5, 6.0))
    gap = float(rng.uniform(0.3, 0.8))
  else:
    win_w = float(rng.uniform(0.7, 1.9))
    gap = float(rng.uniform(0.6, 2.6))
  win_h = float(min(rng.uniform(1.1, 2.1), b.floor_h - 0.7))
  sill_z = float(rng.uniform(0.6, min(1.1, b.floor_h - win_h - 0.2)))
  margin = float(rng.uniform(0.4, 2.0))
  ncols = max(1, int((b.width_m - 2 * margin + gap) // (win_w + gap)))
  span = ncols * win_w + (ncols - 1) * gap
  s_start = (b.width_m - span) / 2
  pair = rng.random() < 0.2 and ncols >= 4
  b.cols = []
  for i in range(ncols):
    s = s_start + i * (win_w + gap)
    if pair:
      s += (0.35 * gap if i % 2 == 0 else -0.35 * gap)
    b.cols.append(s)
  skip = rng.random(ncols) < (0.15 if rng.random() < 0.3 else 0.0)
  return _WindowGrid(win_w=win_w, win_h=win_h, sill_z=sill_z, gap=gap, skip=skip)


def _paint_balcony(rng: np.random.Generator, b: _Building, g: _WindowGrid, zf: float, s: float,
                   rail: np.ndarray) -> None:
  """A balcony slab with railing in front of a french window of floor `zf`, column `s`."""
  cv = b.cv
  cv.rect(zf - 0.05, zf + 0.15, s - 0.4, s + g.win_w + 0.4, b.accent, M_BALCONY, snow_top=True)
  paint_window(cv, dict(b.win, sill=False), zf + 0.15, s, g.win_w,
               min(g.win_h + g.sill_z, b.floor_h - 0.4), b.next_wid, rng)
  for k in range(int((g.win_w + 0.8) / 0.25) + 1):  # Railing bars.
    sb = s - 0.4 + k * 0.25
    cv.rect(zf + 0.15, zf + 1.0, sb, sb + 0.06, rail, M_BALCONY)
  cv.rect(zf + 0.92, zf + 1.02, s - 0.4, s + g.win_w + 0.4, rail, M_BALCONY, snow_top=True)


def _paint_window_grid(rng: np.random.Generator, b: _Building) -> None:
  """Windows, string courses, pilasters and balconies of the upper floors."""
  g = _window_grid(rng, b)
  cv = b.cv
  if rng.random() < 0.5:  # String courses.
    t = float(rng.uniform(0.15, 0.35))
    for f in range(b.floors - 1):
      z = b.ground_h + f * b.floor_h
      cv.rect(z - t, z, 0.0, b.width_m, b.accent, M_FRAME, snow_top=True)
  if rng.random() < 0.25 and len(b.cols) >= 2:  # Pilasters.
    for i in range(len(b.cols) - 1):
      s = b.cols[i] + g.win_w + g.gap / 2
      cv.rect(b.ground_h, b.top, s - 0.2, s + 0.2, b.accent, M_FRAME)
  balcony = rng.random() < 0.25
  balcony_every = int(rng.integers(1, 3))
  rail = jitter_colour(rng, np.array([(0.1, 0.1, 0.1), (0.85, 0.85, 0.85),
                                      (0.3, 0.2, 0.15)][rng.integers(3)], np.float32))
  for f in range(b.floors - 1):
    zf = b.ground_h + f * b.floor_h
    for i, s in enumerate(b.cols):
      if g.skip[i]:
        continue
      if balcony and i % balcony_every == 0:
        _paint_balcony(rng, b, g, zf, s, rail)
      else:
        paint_window(cv, b.win, zf + g.sill_z, s, g.win_w, g.win_h, b.next_wid, rng)
      b.next_wid += 1


def _paint_shop_sign(rng: np.random.Generator, b: _Building, z1: float,
                     sign_colour: np.ndarray) -> None:
  """The sign band above a shop window (top of the window at `z1`), with "letters"."""
  sz0, sz1 = z1 + 0.1, b.ground_h - 0.15
  s_len = float(rng.uniform(0.4, 0.95)) * b.width_m
  s_off = float(rng.uniform(0.0, b.width_m - s_len))
  b.cv.rect(sz0, sz1, s_off, s_off + s_len, sign_colour, M_SIGN, wid=b.next_wid)
  letter = SIGN_COLOURS[(np.argmax(sign_colour.sum() < 1.2) + rng.integers(1, 7)) %
                        len(SIGN_COLOURS)]
  if abs(letter.sum() - sign_colour.sum()) < 0.6:
    letter = np.array([0.95, 0.95, 0.95]) if sign_colour.sum() < 1.5 else np.zeros(3)
  s = s_off + 0.3
  while s < s_off + s_len - 0.5:
    lw = float(rng.uniform(0.2, 0.45))
    b.cv.rect(sz0 + 0.15, sz1 - 0.15, s, s + lw, letter, M_SIGN, wid=b.next_wid)
    s += lw + float(rng.uniform(0.1, 0.3))
  b.next_wid += 1


def _paint_shop(rng: np.random.Generator, b: _Building) -> None:
  """A shop front: window with pillars, door, sign band and maybe a striped awning."""
  cv, width_m = b.cv, b.width_m
  sign_colour = SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))]
  z1 = b.ground_h - float(rng.uniform(0.9, 1.4))
  cv.rect(0.45, z1, 0.3, width_m - 0.3, np.array([0.12, 0.14, 0.16], np.float32), M_GLASS,
          glass=1.0, wid=b.take_wid())
  pillar = float(rng.uniform(1.5, 4.0))
  s = 0.3
  while s < width_m - 0.3:
    cv.rect(0.45, z1, s, s + 0.15, b.accent, M_FRAME)
    s += pillar
  door_s = float(rng.uniform(0.5, max(0.6, width_m - 1.8)))
  cv.rect(0.0, min(2.4, z1), door_s, door_s + 1.2, np.array([0.2, 0.2, 0.22], np.float32),
          M_DOOR)
  _paint_shop_sign(rng, b, z1, sign_colour)
  if rng.random() < 0.4:  # Striped awning.
    ac = SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))]
    az0 = z1 - 0.7
    rs, cs = cv.sl(az0, z1, 0.2, width_m - 0.2)
    stripes = ((np.arange(cs.start, cs.stop) // 4) % 2 == 0)
    cv.rect(az0, z1, 0.2, width_m - 0.2, ac, M_AWNING, snow_top=True)
    cv.rgb[rs, cs][:, stripes] = np.array([0.93, 0.93, 0.9], np.float32)


def _paint_entrance(rng: np.random.Generator, b: _Building) -> None:
  """A residential ground floor: framed front door and windows beside it."""
  cv, width_m = b.cv, b.width_m
  door_w = float(rng.uniform(1.0, 1.8))
  door_s = float(rng.uniform(0.4, max(0.5, width_m - door_w - 0.4)))
  door_col = jitter_colour(rng, np.array([(0.35, 0.2, 0.12), (0.1, 0.15, 0.3),
                                          (0.15, 0.3, 0.2), (0.5, 0.1, 0.1)][rng.integers(4)],
                                         np.float32))
  cv.rect(0.0, 2.5, door_s - 0.15, door_s + door_w + 0.15, b.accent, M_FRAME)
  cv.rect(0.0, 2.35, door_s, door_s + door_w, door_col, M_DOOR)
  gw = float(rng.uniform(0.8, 1.6))
  s = 0.6
  while s + gw < width_m - 0.4:
    if s + gw < door_s - 0.3 or s > door_s + door_w + 0.3:
      paint_window(cv, b.win, 1.1, s, gw, min(1.6, b.ground_h - 1.6), b.take_wid(), rng)
    s += gw + float(rng.uniform(0.8, 2.0))


def _paint_ground_floor(rng: np.random.Generator, b: _Building) -> None:
  """Plinth and a shop front, a residential entrance or a garage door."""
  kind = rng.choice(["shop", "residential", "garage"], p=(
      [0.85, 0.1, 0.05] if b.style == "shops" else [0.35, 0.5, 0.15]))
  plinth = float(rng.uniform(0.3, 0.8))
  b.cv.rect(0.0, plinth, 0.0, b.width_m, b.wall * 0.7, M_WALL)
  if kind == "shop":
    _paint_shop(rng, b)
  elif kind == "residential":
    _paint_entrance(rng, b)
  else:
    cv = b.cv
    gw = float(min(rng.uniform(2.4, 3.5), b.width_m - 0.8))
    gs = float(rng.uniform(0.4, b.width_m - gw - 0.4))
    rs, cs = cv.sl(0.0, 2.4, gs, gs + gw)
    cv.rect(0.0, 2.4, gs, gs + gw, jitter_colour(rng, np.array([0.55, 0.55, 0.55], np.float32)),
            M_DOOR)
    cv.rgb[rs, cs][(np.arange(rs.start, rs.stop) % 3) == 0] *= 0.7


def _paint_pitched_roof(rng: np.random.Generator, b: _Building, roof: str) -> float:
  """A gable or hip roof of tiles, maybe with dormers; returns the roof's top."""
  cv, width_m, height = b.cv, b.width_m, b.height
  rise = float(rng.uniform(1.5, 4.5))
  roof_colour = jitter_colour(rng, ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))])
  s_m = (np.arange(cv.w) + 0.5) / PPM
  if roof == "gable":
    prof = height + rise * (1.0 - np.abs(2.0 * s_m / width_m - 1.0))
  else:
    prof = height + np.minimum(rise, np.minimum(s_m, width_m - s_m))
  prof = np.where(s_m < width_m, prof, height)
  z_m = (np.arange(cv.h) + 0.5) / PPM
  in_roof = (z_m[:, None] >= height) & (z_m[:, None] < prof[None, :])
  cv.rgb[in_roof] = roof_colour
  cv.mat[in_roof] = M_ROOF
  cv.snow[in_roof] = 1.0
  cv.alpha |= in_roof
  tiles = in_roof & ((np.arange(cv.h) % 3) == 0)[:, None]
  cv.rgb[tiles] *= 0.8
  if rng.random() < 0.4:  # Dormers.
    for s in b.cols if b.style != "tower" and len(b.cols) else []:
      if rng.random() < 0.5:
        cv.rect(height + 0.2, height + 1.3, s, s + 0.8, b.accent, M_FRAME, snow_top=True)
        cv.rect(height + 0.35, height + 1.15, s + 0.12, s + 0.68, b.win["glass_colour"], M_GLASS,
                glass=1.0, wid=b.take_wid())
  return height + rise


def _paint_setback(rng: np.random.Generator, b: _Building) -> float:
  """A set-back top storey with windows; returns its top."""
  cv, width_m, height = b.cv, b.width_m, b.height
  extra = float(rng.uniform(2.5, 3.5))
  a = float(rng.uniform(0.1, 0.4)) * width_m
  e = width_m - float(rng.uniform(0.1, 0.4)) * width_m
  cv.rect(height, height + extra, a, e, jitter_colour(rng, b.wall * 0.9), M_WALL)
  for s in np.arange(a + 0.6, e - 1.2, 2.2):
    cv.rect(height + 0.8, height + 2.6, s, s + 1.4, b.win["glass_colour"], M_GLASS, glass=1.0,
            wid=b.take_wid())
  cv.rect(height + extra - 0.3, height + extra, a, e, b.accent, M_FRAME, snow_top=True)
  return height + extra


def _paint_roof(rng: np.random.Generator, b: _Building) -> float:
  """Cornice, roof line and chimneys / rooftop boxes; returns the highest point in metres."""
  width_m, height = b.width_m, b.height
  corn = float(rng.uniform(0.25, 0.7))
  b.cv.rect(height - corn, height, 0.0, width_m, b.accent, M_FRAME, snow_top=True)
  roof = rng.choice(["flat", "gable", "hip", "setback"], p=[0.45, 0.2, 0.2, 0.15])
  roof_top = height
  if roof in ("gable", "hip") and b.style != "tower":
    roof_top = _paint_pitched_roof(rng, b, roof)
  elif roof == "setback" and width_m > 10:
    roof_top = _paint_setback(rng, b)
  if rng.random() < 0.3:  # Chimneys / rooftop boxes on flat parts.
    for _ in range(int(rng.integers(1, 4))):
      cw = float(rng.uniform(0.5, 2.5))
      cs0 = float(rng.uniform(0.2, max(0.3, width_m - cw - 0.2)))
      ch = float(rng.uniform(0.8, 2.5))
      base = height if roof in ("flat", "setback") else roof_top - 1.0
      b.cv.rect(base, base + ch, cs0, cs0 + cw, jitter_colour(rng, b.wall * 0.8), M_WALL,
                snow_top=True)
      roof_top = max(roof_top, base + ch)
  return roof_top


def paint_building(rng: np.random.Generator, width_m: float, next_wid: int,
                   height_px: int) -> tuple[Canvas, int, float, np.ndarray]:
  """Paints one building facade `width_m` wide.

  Args:
    rng: the generator every random choice is drawn from.
    width_m: facade width in metres.
    next_wid: first free window id (ids identify windows and signs across the city).
    height_px: canvas height in texels.

  Returns:
    (canvas, next free window id, highest point in metres, wall colour).
  """
  b = _start_building(rng, width_m, next_wid, height_px)
  b.win = _window_style(rng, b.wall, b.accent)
  if b.style == "tower":
    _paint_curtain_wall(rng, b)
  else:
    _paint_window_grid(rng, b)
  _paint_ground_floor(rng, b)
  roof_top = _paint_roof(rng, b)
  # Texels beyond the facade width are transparent.
  b.cv.alpha[:, int(math.ceil(width_m * PPM)):] = False
  return b.cv, b.next_wid, float(roof_top), b.wall


# ---------------------------------------------------------------------------------------------
# Cars and pedestrians
# ---------------------------------------------------------------------------------------------


def _paint_car_side(cv: Canvas, length: float, height: float, body_top: float,
                    colour: np.ndarray, glass: np.ndarray) -> None:
  """The long side of a car: cabin with two windows, two wheels."""
  cv.rect(body_top, height, 0.12 * length, 0.88 * length, colour * 0.9, M_CAR)
  cv.rect(body_top + 0.05, height - 0.08, 0.17 * length, 0.5 * length - 0.05, glass, M_CARGLASS,
          glass=0.4)
  cv.rect(body_top + 0.05, height - 0.08, 0.5 * length + 0.05, 0.83 * length, glass,
          M_CARGLASS, glass=0.4)
  for sc in (0.8, length - 0.8):  # Wheels.
    rs, cs = cv.sl(0.0, 0.66, sc - 0.33, sc + 0.33)
    zz = (np.arange(rs.start, rs.stop) + 0.5) / PPM - 0.33
    ss = (np.arange(cs.start, cs.stop) + 0.5) / PPM - sc
    disk = zz[:, None] ** 2 + ss[None, :] ** 2 < 0.33 ** 2
    sub = (rs, cs)
    cv.rgb[sub][disk] = (0.05, 0.05, 0.05)
    cv.mat[sub][disk] = M_TYRE
    cv.alpha[sub] |= disk


def _paint_car_end(cv: Canvas, length: float, height: float, body_top: float,
                   colour: np.ndarray, glass: np.ndarray, front: bool) -> None:
  """The front or back of a car: windscreen, head or tail lights, bumper, tyres."""
  cv.rect(body_top, height, 0.1 * length, 0.9 * length, colour * 0.9, M_CAR)
  cv.rect(body_top + 0.05, height - 0.08, 0.15 * length, 0.85 * length, glass, M_CARGLASS,
          glass=0.4)
  light = np.array([1.0, 0.95, 0.8] if front else [0.7, 0.05, 0.05], np.float32)
  for s0 in (0.08, length - 0.38):
    cv.rect(body_top - 0.25, body_top - 0.1, s0, s0 + 0.3, light, M_HEAD if front else M_TAIL)
  cv.rect(0.25, 0.45, 0.0, length, (0.1, 0.1, 0.1), M_CAR)
  cv.rect(0.0, 0.25, 0.1, 0.35, (0.05, 0.05, 0.05), M_TYRE)
  cv.rect(0.0, 0.25, length - 0.35, length - 0.1, (0.05, 0.05, 0.05), M_TYRE)


def paint_car(length: float, height: float, colour: np.ndarray, side: bool, front: bool,
              height_px: int) -> Canvas:
  """One face of a car (side or end, `length` wide) as a texture."""
  cv = Canvas(length, height_px)
  body_top = height * 0.62
  cv.rect(0.25, body_top, 0.0, length, colour, M_CAR)
  glass = np.array([0.1, 0.12, 0.15], np.float32)
  if side:
    _paint_car_side(cv, length, height, body_top, colour, glass)
  else:
    _paint_car_end(cv, length, height, body_top, colour, glass, front)
  cv.alpha[:, int(math.ceil(length * PPM)):] = False
  return cv


def paint_person(rng: np.random.Generator, height_px: int) -> Canvas:
  """A pedestrian billboard 0.6 m wide."""
  cv = Canvas(0.6, height_px)
  h = float(rng.uniform(1.55, 1.9))
  shirt = rng.uniform(0.05, 0.9, 3).astype(np.float32)
  pants = rng.uniform(0.05, 0.5, 3).astype(np.float32)
  skin = np.array([(0.85, 0.7, 0.6), (0.6, 0.45, 0.35), (0.35, 0.25, 0.2)][rng.integers(3)],
                  np.float32)
  cv.rect(0.0, h * 0.48, 0.14, 0.28, pants, M_PERSON)
  cv.rect(0.0, h * 0.48, 0.32, 0.46, pants, M_PERSON)
  cv.rect(h * 0.48, h * 0.84, 0.1, 0.5, shirt, M_PERSON)
  cv.rect(h * 0.86, h, 0.2, 0.4, skin, M_PERSON)
  cv.alpha[:, int(math.ceil(0.6 * PPM)):] = False
  return cv


# ---------------------------------------------------------------------------------------------
# Atlas
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Atlas:
  """Textures of a city, packed side by side in one strip, with mip levels, flattened."""

  rgb: np.ndarray  # (N, 3) float32 albedo (sRGB-ish, [0, 1])
  glass: np.ndarray  # (N,) float32 glass coverage
  snow: np.ndarray  # (N,) float32 snow-catching coverage
  mat: np.ndarray  # (N,) uint8 material
  wid: np.ndarray  # (N,) int32 window / sign id (0 = none)
  alpha: np.ndarray  # (N,) bool opaque
  level_offset: np.ndarray  # (L,) int64 start of each level in the flat arrays
  level_width: np.ndarray  # (L,) int64 texels per row of each level
  level_height: np.ndarray  # (L,) int64 rows of each level


def _down(a: np.ndarray) -> np.ndarray:
  """2 x 2 box filter (one mip level down)."""
  return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def pack_atlas(canvases: Sequence[Canvas]) -> tuple[Atlas, np.ndarray]:
  """Packs canvases into a mip-mapped atlas; returns it and each canvas' first column (level 0)."""
  col0 = np.cumsum([0] + [c.w for c in canvases[:-1]]).astype(np.int64)
  rgb = np.concatenate([c.rgb for c in canvases], 1)
  glass = np.concatenate([c.glass for c in canvases], 1)
  snow = np.concatenate([c.snow for c in canvases], 1)
  mat = np.concatenate([c.mat for c in canvases], 1)
  wid = np.concatenate([c.wid for c in canvases], 1)
  alpha = np.concatenate([c.alpha for c in canvases], 1).astype(np.float32)
  levels = []
  for lvl in range(LEVELS):
    if lvl:
      # Colours average over opaque texels only (transparent texels carry no colour).
      wgt = _down(alpha)
      rgb = _down(rgb * alpha[..., None]) / np.maximum(wgt, 1e-6)[..., None]
      glass, snow = _down(glass), _down(snow)
      mat, wid = mat[0::2, 0::2], wid[0::2, 0::2]
      alpha = wgt
    levels.append((rgb, glass, snow, mat, wid, alpha >= 0.5))
  widths = np.array([lv[0].shape[1] for lv in levels], np.int64)
  heights = np.array([lv[0].shape[0] for lv in levels], np.int64)
  offsets = np.cumsum([0] + list(widths * heights))[:-1].astype(np.int64)
  atlas = Atlas(
      rgb=np.concatenate([lv[0].reshape(-1, 3) for lv in levels]).astype(np.float32),
      glass=np.concatenate([lv[1].reshape(-1) for lv in levels]).astype(np.float32),
      snow=np.concatenate([lv[2].reshape(-1) for lv in levels]).astype(np.float32),
      mat=np.concatenate([lv[3].reshape(-1) for lv in levels]).astype(np.uint8),
      wid=np.concatenate([lv[4].reshape(-1) for lv in levels]).astype(np.int32),
      alpha=np.concatenate([lv[5].reshape(-1) for lv in levels]),
      level_offset=offsets, level_width=widths, level_height=heights)
  return atlas, col0

"""The picture of one localized photo: the photo, its top-5 matches and their positions on a map.

Drawn like gcl_jax.evaluation.visualize (matplotlib Figure on an Agg canvas, pyplot untouched),
saved with its atomic, URL-aware PNG writer.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gcl_jax.evaluation import visualize
from gcl_jax.localize import index as index_lib

MATCH_COLORS = ("#e41a1c", "#ff7f00", "#4daf4a", "#984ea3", "#a65628")
_MAX_MAP_POINTS = 20000  # database positions drawn (a random subset beyond that)


def _image_or_none(path: str, max_side: int):
  try:
    return visualize.load_rgb(path, max_side)
  except Exception:  # pylint: disable=broad-except
    return None


def plot_localization(photo: str, matches: index_lib.Matches, row: int,
                      index: index_lib.PlaceIndex, out_path: str, *, k: int = 5,
                      panel_px: int = 150, map_px: int = 360, dpi: int = 100) -> None:
  """Writes a PNG: top, the photo (blue) and its top-k matches (rank, key, distance); bottom, a
  map (UTM metres) of the database (grey dots), the matches (numbered, same colours) and the two
  estimates (top-1: star, weighted mean: cross). A match whose image is gone is a grey box."""
  style = visualize.style_panel
  k = min(k, matches.indices.shape[1])
  cols = k + 1
  q_img = visualize.load_rgb(photo, 2 * panel_px)
  h0, w0 = q_img.shape[:2]
  image_px = max(1, round(panel_px * min(h0 / w0, 1.0)))
  row_px = image_px + 30
  width_px, height_px = cols * panel_px, row_px + map_px
  fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
  FigureCanvasAgg(fig)
  fontsize = 0.06 * panel_px * 72 / dpi
  border_pt = 6 * 72 / dpi
  bottom = (map_px + 6) / height_px
  for c in range(cols):
    rect = ((c * panel_px + 6) / width_px, bottom, (panel_px - 12) / width_px,
            (image_px - 12) / height_px)
    ax = fig.add_axes(rect)
    if c == 0:
      ax.imshow(q_img, aspect="auto")
      style(ax, visualize.QUERY_COLOR, "photo", fontsize, border_pt)
      continue
    i = int(matches.indices[row, c - 1])
    img = _image_or_none(str(matches.paths[row, c - 1]), 2 * panel_px) if i >= 0 else None
    ax.imshow(img if img is not None else np.full((h0, w0, 3), 235, np.uint8), aspect="auto")
    title = (f"#{c} {matches.keys[row, c - 1]}"[:18] + f"\nd={matches.distances[row, c - 1]:.3f}"
             if i >= 0 else f"#{c} none")
    style(ax, MATCH_COLORS[(c - 1) % len(MATCH_COLORS)], title, fontsize * 0.85, border_pt)
  ax = fig.add_axes((0.08, 0.1 * map_px / height_px, 0.88, 0.78 * map_px / height_px))
  utm = index.utm
  if len(utm) > _MAX_MAP_POINTS:
    utm = utm[np.random.default_rng(0).choice(len(utm), _MAX_MAP_POINTS, replace=False)]
  ax.scatter(utm[:, 0], utm[:, 1], s=4, c="#c0c0c0", label="database", linewidths=0)
  pos = matches.positions[row, :k]
  valid = np.isfinite(pos).all(axis=1)
  for r in np.flatnonzero(valid)[::-1]:
    color = MATCH_COLORS[r % len(MATCH_COLORS)]
    ax.scatter(pos[r, 0], pos[r, 1], s=60, c=color, edgecolors="black", linewidths=0.5,
               zorder=3)
    ax.annotate(str(r + 1), (pos[r, 0], pos[r, 1]), textcoords="offset points", xytext=(4, 4),
                fontsize=8, color=color, fontweight="bold")
  top1, weighted = matches.estimate_top1()[row], matches.estimate_weighted()[row]
  if np.isfinite(top1).all():
    ax.scatter(*top1, marker="*", s=220, c="none", edgecolors="black", linewidths=1.2,
               zorder=4, label="top-1 estimate")
  ax.scatter(*weighted, marker="X", s=90, c="#2060d0", edgecolors="white", linewidths=0.8,
             zorder=5, label=f"weighted mean of top-{matches.indices.shape[1]}")
  if valid.any():  # zoom on the matches and their neighbourhood, at the axes' aspect ratio
    ratio = (0.88 * width_px) / (0.78 * map_px)
    lo, hi = pos[valid].min(axis=0), pos[valid].max(axis=0)
    centre = (lo + hi) / 2
    pad = max(20.0, 0.15 * float(np.max(hi - lo)))
    half_x = max((hi[0] - lo[0]) / 2 + pad, ((hi[1] - lo[1]) / 2 + pad) * ratio)
    ax.set_xlim(centre[0] - half_x, centre[0] + half_x)
    ax.set_ylim(centre[1] - half_x / ratio, centre[1] + half_x / ratio)
  ax.set_aspect("equal", adjustable="box")
  ax.set_xlabel("east (m)", fontsize=8)
  ax.set_ylabel("north (m)", fontsize=8)
  ax.tick_params(labelsize=7)
  ax.ticklabel_format(useOffset=False, style="plain")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
  visualize.save_png(fig, out_path, dpi, facecolor="white")

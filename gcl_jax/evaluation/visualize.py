"""Pictures and tables of retrieval results.

Figures are rendered with matplotlib's Agg canvas attached explicitly to a `Figure`: pyplot and
the process-wide backend are never touched, so this works headless and inside notebooks alike.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from gcl_jax import io as gcl_io
from gcl_jax.data import files

CORRECT_COLOR = "#00c000"  # Border of a retrieval that is a positive.
WRONG_COLOR = "#e00000"  # Border of a retrieval that is not a positive.
QUERY_COLOR = "#2060d0"  # Border of the query image.
EMPTY_COLOR = "#b0b0b0"  # An empty slot (-1: database smaller than k).

_TITLE_PX = 30  # Height of the title strip above each image, in pixels.
_MARGIN_PX = 6  # Gap between an image and the edge of its panel, in pixels.
_BORDER_PX = 6  # Width of the coloured border, in pixels (half of it overlaps the image).


def load_rgb(path: str, max_side: int) -> np.ndarray:
  """Loads an image as uint8 RGB, shrunk (aspect kept) so that its longer side is <= max_side."""
  im = files.open_image(path)
  with im:
    im = im.convert("RGB")
    if max(im.size) > max_side:
      im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(im)


def style_panel(ax, color: str, title: str, fontsize: float, border_pt: float) -> None:
  """An image panel without ticks, framed in `color` (border_pt wide), titled above."""
  ax.set_xticks([])
  ax.set_yticks([])
  for spine in ax.spines.values():
    spine.set_color(color)
    spine.set_linewidth(border_pt)
  ax.set_title(title, color=color, fontsize=fontsize, pad=4, fontweight="bold")


def plot_retrievals(query_paths: Sequence[str], db_paths: Sequence[str], ranked: np.ndarray,
                    positives: Sequence[np.ndarray], out_path: str, num_queries: int = 8,
                    k: int = 5, seed: int = 0, *, panel_px: int = 200, dpi: int = 100) -> np.ndarray:
  """Writes a PNG grid: one row per query, the query then its top-k retrievals.

  Retrievals that are positives get a thick green border and a green "#rank" title, others a red
  one; the query has a blue border; empty slots (-1) are drawn as grey boxes. Images keep their
  aspect ratio (imshow with equal aspect), so 64 x 96 thumbnails and 480 x 640 images both fill
  their panel. The PNG is exactly (k' + 1) * panel_px pixels wide and
  rows * (round(panel_px * h / w) + 30) pixels high, where k' = min(k, ranked.shape[1]), rows the
  number of queries drawn and h x w the size of the first drawn query image.

  Args:
    query_paths: path of the query of each ranked row.
    db_paths: paths of the database images (indexed by `ranked`).
    ranked: (Q, K) database indices in rank order; -1 marks an empty slot.
    positives: Q arrays of database indices that are correct for each query.
    out_path: PNG file to write (parent directories are created).
    num_queries: queries drawn; chosen at random (with `seed`) among the Q rows, shown in row order.
      All rows are drawn when Q <= num_queries.
    k: retrievals drawn per query.
    seed: seed of the query choice.
    panel_px: width of one panel in pixels.
    dpi: resolution of the PNG (fonts scale with it).

  Returns:
    The indices of the drawn rows of `ranked`.

  Raises:
    ValueError: inconsistent lengths, no queries, or k / num_queries < 1.
  """
  ranked = np.asarray(ranked)
  if ranked.ndim != 2:
    raise ValueError(f"ranked must be 2-D (queries x k), got shape {ranked.shape}")
  num_rows = ranked.shape[0]
  if len(query_paths) != num_rows or len(positives) != num_rows:
    raise ValueError(f"ranked has {num_rows} rows but query_paths has {len(query_paths)} and "
                     f"positives has {len(positives)}")
  if num_rows == 0:
    raise ValueError("ranked has no rows: nothing to draw")
  if k < 1 or num_queries < 1:
    raise ValueError(f"k and num_queries must be >= 1, got k={k}, num_queries={num_queries}")
  if ranked.size and ranked.max() >= len(db_paths):
    raise ValueError(f"ranked holds database index {int(ranked.max())} but db_paths has only "
                     f"{len(db_paths)} entries")
  cols = min(k, ranked.shape[1]) + 1
  if num_rows <= num_queries:
    rows = np.arange(num_rows)
  else:
    rows = np.sort(np.random.default_rng(seed).choice(num_rows, num_queries, replace=False))

  max_side = 2 * panel_px
  queries = [load_rgb(query_paths[i], max_side) for i in rows]
  h0, w0 = queries[0].shape[:2]
  image_px = max(1, round(panel_px * h0 / w0))
  row_px = image_px + _TITLE_PX
  width_px, height_px = cols * panel_px, len(rows) * row_px
  fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
  FigureCanvasAgg(fig)
  fontsize = 0.055 * panel_px * 72 / dpi
  border_pt = _BORDER_PX * 72 / dpi
  cache: dict[int, np.ndarray] = {}
  for r, (row, q_img) in enumerate(zip(rows, queries)):
    pos = set(np.asarray(positives[row]).tolist())
    bottom_px = height_px - (r + 1) * row_px + _MARGIN_PX
    for c in range(cols):
      rect = ((c * panel_px + _MARGIN_PX) / width_px, bottom_px / height_px,
              (panel_px - 2 * _MARGIN_PX) / width_px, (image_px - 2 * _MARGIN_PX) / height_px)
      ax = fig.add_axes(rect)
      if c == 0:
        ax.imshow(q_img, aspect="equal", interpolation="antialiased")
        style_panel(ax, QUERY_COLOR, f"query {row} ({len(pos)} pos)", fontsize, border_pt)
        continue
      idx = int(ranked[row, c - 1])
      if idx < 0:
        ax.imshow(np.full((h0, w0, 3), 235, np.uint8), aspect="equal")
        ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center",
                color="#808080", fontsize=fontsize)
        style_panel(ax, EMPTY_COLOR, f"#{c}", fontsize, border_pt)
        continue
      if idx not in cache:
        cache[idx] = load_rgb(db_paths[idx], max_side)
      ok = idx in pos
      ax.imshow(cache[idx], aspect="equal", interpolation="antialiased")
      style_panel(ax, CORRECT_COLOR if ok else WRONG_COLOR,
                  f"#{c} {'correct' if ok else 'wrong'}", fontsize, border_pt)
  save_png(fig, out_path, dpi, facecolor="white")
  return rows


def _recall_ns(result: dict) -> list[int]:
  """The cut-offs N for which `result` has a "recall@N" entry, ascending."""
  ns = []
  for key in result:
    m = re.fullmatch(r"recall@(\d+)", key)
    if m:
      ns.append(int(m.group(1)))
  return sorted(ns)


def save_png(fig: Figure, out_path: str, dpi: int, **kwargs) -> None:
  """Renders `fig` to PNG and writes it atomically (local path or URL)."""
  buf = io.BytesIO()
  fig.savefig(buf, dpi=dpi, format="png", **kwargs)
  gcl_io.atomic_write(out_path, buf.getvalue())


def plot_recall_curves(results: dict[str, dict], out_path: str, *, title: str | None = None,
                       dpi: int = 120) -> None:
  """Writes a PNG with one recall@N curve (percent over N) per named result.

  Args:
    results: name -> result dict with "recall@N" entries (e.g. from `evaluate_retrieval`).
    out_path: PNG file to write (parent directories are created).
    title: figure title; defaults to the protocol and query count when they agree across results.
    dpi: resolution.

  Raises:
    ValueError: no results, or a result without any "recall@N" key.
  """
  if not results:
    raise ValueError("results is empty: nothing to plot")
  fig = Figure(figsize=(6.4, 4.2), dpi=dpi)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  all_ns: set[int] = set()
  for name, result in results.items():
    ns = _recall_ns(result)
    if not ns:
      raise ValueError(f"result {name!r} has no 'recall@N' entry (keys: {sorted(result)})")
    all_ns.update(ns)
    values = [result[f"recall@{n}"] for n in ns]
    (line,) = ax.plot(ns, values, marker="o", linewidth=2, label=name)
    ax.annotate(f"{values[0]:.1f}", (ns[0], values[0]), textcoords="offset points",
                xytext=(5, 6), fontsize=8, color=line.get_color())
  ax.set_xscale("log")
  ticks = sorted(all_ns)
  ax.set_xticks(ticks)
  ax.set_xticklabels([str(n) for n in ticks])
  ax.minorticks_off()
  ax.set_ylim(0, 100)
  ax.set_xlabel("N (retrieved database images)")
  ax.set_ylabel("Recall@N (%)")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="best")
  if title is None:
    protocols = {r.get("protocol") for r in results.values()}
    num_q = {r.get("num_queries") for r in results.values()}
    parts = []
    if len(protocols) == 1 and None not in protocols:
      parts.append(f"protocol {protocols.pop()}")
    if len(num_q) == 1 and None not in num_q:
      parts.append(f"{num_q.pop()} queries")
    title = ", ".join(parts)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  save_png(fig, out_path, dpi)


def results_markdown(results: dict[str, dict], ns: Sequence[int] = (1, 5, 10, 20)) -> str:
  """A markdown table: one row per named result, columns R@N (percent), counts and protocol.

  Missing entries are shown as "-". Recall values are printed with one decimal.
  """
  def cell(value) -> str:
    if value is None:
      return "-"
    if isinstance(value, float):
      return f"{value:.1f}"
    return str(value).replace("|", "\\|")

  header = ["", *[f"R@{n}" for n in ns], "queries", "database", "protocol"]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(ns) + 2) + [":---"]) + "|"]
  for name, result in results.items():
    row = [cell(name), *[cell(result.get(f"recall@{n}")) for n in ns],
           cell(result.get("num_queries")), cell(result.get("num_database")),
           cell(result.get("protocol"))]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def plot_compare_curves(summary: dict, out_path: str, *, n: int = 5, dpi: int = 120) -> None:
  """compare.png: Recall@n against images seen, one curve per variant, a band over seeds.

  Left: against images through the backward pass (the budget every variant gets); right: against
  all images through the network in training (backward pass + forward passes spent on mining).
  The line is the mean over seeds at each evaluation point, the band mean ± standard deviation.

  Args:
    summary: the `compare` summary (variants -> runs -> curve rows).
    out_path: PNG file to write.
    n: which Recall@n to draw.
  """
  fig = Figure(figsize=(11, 4.2), dpi=dpi)
  FigureCanvasAgg(fig)
  axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
  key = f"recall@{n}"
  for name, variant in summary["variants"].items():
    curves = [r["curve"] for r in variant["runs"] if r["curve"]]
    if not curves:
      continue
    length = min(len(c) for c in curves)  # runs of one variant share their evaluation steps
    rows = [c[:length] for c in curves]
    recall = np.array([[row[key] for row in c] for c in rows])
    backward = np.mean([[row["images_backward"] for row in c] for c in rows], axis=0)
    mining = np.mean([[row["images_forwarded_mining"] for row in c] for c in rows], axis=0)
    mean, std = recall.mean(0), recall.std(0, ddof=1) if len(rows) > 1 else np.zeros(length)
    for ax, x in zip(axes, (backward, backward + mining)):
      (line,) = ax.plot(x, mean, marker="o", linewidth=2, label=f"{name} ({len(rows)} seeds)")
      ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  titles = ("images through the backward pass", "images through the network (incl. mining)")
  for ax, title in zip(axes, titles):
    ax.set_xlabel(title)
    ax.set_ylabel(f"Recall@{n} (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
  fig.suptitle(f"Recall@{n} against images seen (mean ± std over seeds)")
  fig.tight_layout()
  save_png(fig, out_path, dpi)

"""Picture of the graded labels around one query: database cameras coloured by psi on a map."""

from __future__ import annotations

import io as io_lib

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.types import ImageTable
from gcl_jax.types import PairTable


def _sector(ax, centre: np.ndarray, heading_deg: float, radius_m: float, fov_deg: float,
            **kwargs) -> None:
  """Draws a FoV sector (compass heading, clockwise from north) on map axes (east, north)."""
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  mid = 90.0 - heading_deg  # matplotlib angles: counter-clockwise from +east.
  ax.add_patch(patches.Wedge(tuple(centre), radius_m, mid - fov_deg / 2, mid + fov_deg / 2,
                             **kwargs))


def plot_query_labels(query_table: ImageTable, database_table: ImageTable,
                      pair_table: PairTable, q: int, out_png: str, *,
                      radius_m: float | None = None, fov_deg: float | None = None,
                      extent_m: float | None = None, num_sectors: int = 3) -> str:
  """Writes a map of the database cameras around query `q`, coloured by their psi with it.

  The map is in metres relative to the query (east right, north up, equal aspect). Database
  cameras within `extent_m` of the query are dots coloured by psi (0 for pairs the table does not
  list; a colour bar shows the scale), panoramas are grey crosses; the query's FoV sector is drawn
  in red, and the sectors of the `num_sectors` database cameras with the highest psi in blue with
  their psi written next to them.

  Args:
    query_table, database_table: the city's image tables.
    pair_table: the city's labels (rows = query_table, columns = database_table).
    q: query row.
    out_png: output file (PNG); its directory is created if needed.
    radius_m, fov_deg: sector shape; default `pair_table.params` or 50 m / 90 degrees.
    extent_m: half-width of the map; default 2.5 * radius_m.
    num_sectors: number of database sectors drawn.

  Returns:
    out_png.

  Raises:
    IndexError: if q is not a query row.
    ValueError: if the tables do not match the pair table's sizes.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg", force=False)
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  if (len(query_table), len(database_table)) != (pair_table.num_queries, pair_table.num_database):
    raise ValueError(f"tables have {len(query_table)} queries x {len(database_table)} database "
                     f"images but the pair table is {pair_table.num_queries} x "
                     f"{pair_table.num_database}")
  if not 0 <= q < len(query_table):
    raise IndexError(f"query row {q} is outside [0, {len(query_table)}) of {query_table.name!r}")
  params = pair_table.params or {}
  r = float(radius_m if radius_m is not None else params.get("radius_m", 50.0))
  fov = float(fov_deg if fov_deg is not None else params.get("fov_deg", 90.0))
  extent = float(extent_m if extent_m is not None else 2.5 * r)

  centre = query_table.utm[q]
  rel = database_table.utm - centre
  near = np.flatnonzero(np.max(np.abs(rel), axis=1) <= extent)
  psi = np.zeros(len(database_table), np.float32)
  db_idx, row_psi, _ = pair_table.row(q)
  psi[db_idx] = row_psi
  pano = np.asarray(database_table.pano, bool)

  fig, ax = plt.subplots(figsize=(7, 6))
  plain = near[~pano[near]]
  order = plain[np.argsort(psi[plain], kind="stable")]  # high psi drawn on top.
  sc = ax.scatter(rel[order, 0], rel[order, 1], c=psi[order], cmap="viridis", vmin=0.0, vmax=1.0,
                  s=14, edgecolors="none", zorder=3)
  fig.colorbar(sc, ax=ax, label="psi (graded FoV overlap with the query)")
  panos = near[pano[near]]
  if len(panos):
    ax.scatter(rel[panos, 0], rel[panos, 1], marker="x", c="0.5", s=14, zorder=3,
               label="database panorama")
  top = order[::-1][:num_sectors]
  for j in top:
    if psi[j] <= 0 or not np.isfinite(database_table.heading[j]):
      continue
    _sector(ax, rel[j], float(database_table.heading[j]), r, fov, facecolor="tab:blue",
            alpha=0.12, edgecolor="tab:blue", linewidth=0.8, zorder=2)
    ax.annotate(f"{psi[j]:.2f}", rel[j], textcoords="offset points", xytext=(4, 4), fontsize=8,
                color="tab:blue", zorder=4)
  heading = float(query_table.heading[q])
  if np.isfinite(heading):
    _sector(ax, np.zeros(2), heading, r, fov, facecolor="tab:red", alpha=0.15,
            edgecolor="tab:red", linewidth=1.5, zorder=2, label="query FoV")
  ax.plot([0], [0], marker="*", color="tab:red", markersize=14, zorder=5, linestyle="none",
          label=f"query {q} ({query_table.keys[q]})")
  ax.set_xlim(-extent, extent)
  ax.set_ylim(-extent, extent)
  ax.set_aspect("equal")
  ax.set_xlabel("east (m, relative to the query)")
  ax.set_ylabel("north (m, relative to the query)")
  ax.set_title(f"{query_table.name}: query {q}, r = {r:g} m, FoV = {fov:g} deg\n"
               f"{int(np.count_nonzero(psi > 0))} database images with psi > 0", fontsize=9)
  ax.legend(loc="lower left", fontsize=8)
  ax.grid(True, linewidth=0.3)
  buf = io_lib.BytesIO()
  fig.savefig(buf, dpi=110, bbox_inches="tight", format="png")
  plt.close(fig)
  gcl_io.atomic_write(out_png, buf.getvalue())
  return out_png

"""A synthetic street-grid city (query and database ImageTables) for label tests and benchmarks.

Streets form a square grid (one street every `block_m` metres in both directions); cameras stand
every `spacing_m` metres along the streets (database positions offset by half a spacing from the
query positions, with a little lateral noise) and look in one of 4 directions relative to the
street (forward, right, backward, left, plus a few degrees of noise). Deterministic in `seed`.
`gcl_jax.data.msls.write_msls_city` writes such tables as an MSLS city.
"""

from __future__ import annotations

import math

import numpy as np

from gcl_jax.types import ImageTable


def _street_points(n: int, spacing_m: float, block_m: float, offset_m: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """n positions along a street grid, and the compass direction of each point's street."""
  k = max(1, math.ceil(math.sqrt(n * spacing_m / (2.0 * block_m))))  # k x k grid, >= n slots.
  length = k * block_m
  s = np.arange(offset_m, length, spacing_m)
  lines = np.arange(k) * block_m
  east_e = np.tile(s, k)  # streets running east: varying east, fixed north.
  east_n = np.repeat(lines, len(s))
  north_e = np.repeat(lines, len(s))  # streets running north.
  north_n = np.tile(s, k)
  pos = np.concatenate([np.stack([east_e, east_n], 1), np.stack([north_e, north_n], 1)])
  street_dir = np.concatenate([np.full(len(east_e), 90.0), np.zeros(len(north_e))])
  pick = np.sort(rng.choice(len(pos), size=n, replace=False))
  return pos[pick], street_dir[pick]


def street_city(num_queries: int, num_database: int, *, spacing_m: float = 3.0,
                block_m: float = 100.0, pano_every: int = 0, seed: int = 0,
                origin: tuple[float, float] = (500_000.0, 5_000_000.0)
                ) -> tuple[ImageTable, ImageTable]:
  """(query, database) ImageTables of a synthetic street-grid city.

  Args:
    num_queries, num_database: number of images on each side.
    spacing_m: distance between consecutive camera positions along a street.
    block_m: distance between parallel streets.
    pano_every: if > 0, every `pano_every`-th image of each side is a panorama (NaN heading).
    seed: random seed (positions, headings, noise).
    origin: UTM (east, north) of the grid's corner.

  Returns:
    (query, database) tables named "synthetic/query" and "synthetic/database".
  """
  rng = np.random.default_rng(seed)
  tables = []
  for side, n, offset in (("query", num_queries, 0.0), ("database", num_database, 0.5 * spacing_m)):
    pos, street = _street_points(n, spacing_m, block_m, offset, rng)
    pos = pos + rng.normal(0.0, 0.5, size=pos.shape) + np.asarray(origin)
    heading = np.mod(street + 90.0 * rng.integers(0, 4, n) + rng.normal(0.0, 5.0, n), 360.0)
    pano = np.zeros(n, bool)
    if pano_every > 0:
      pano[::pano_every] = True
      heading[pano] = np.nan
    keys = np.array([f"{side[0]}{i:06d}" for i in range(n)])
    tables.append(ImageTable(
        root="/nonexistent/synthetic", name=f"synthetic/{side}",
        paths=np.array([f"synthetic/{side}/images/{k}.jpg" for k in keys]), keys=keys, utm=pos,
        heading=heading, pano=pano, night=np.zeros(n, bool), in_all=np.ones(n, bool)))
  return tables[0], tables[1]

"""Labels a whole dataset, city by city, and summarises the labels of each city.

`label_dataset` takes the (city, query table, database table) triples that a reader produced
(e.g. `gcl_jax.data.msls.read_msls_city`; this module never reads images or CSVs itself),
computes (or reuses, through `label_city_cached`) each city's sparse FoV PairTable, and returns
one summary per city:

    queries, database           number of images on each side
    pairs                       number of listed pairs (camera centres within the search radius)
    psi_zero                    pairs with psi == 0 (of ALL num_queries x num_database pairs)
    psi_soft                    pairs with 0 < psi < 0.5 (training bins, GCL_REFERENCE.md 3.3)
    psi_positive                pairs with psi >= 0.5
    sim_positive, sim_ambiguous pairs with sim == 1 (<= pos_dist_m) and sim == -1 (in between)
    query_panoramas, database_panoramas   images flagged as panoramas (never labelled: psi = 0)
    label_file                  the cached .npz (None when out_dir is None)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.labels.fov2d import DEFAULT_PARAMS, city_pair_table
from gcl_jax.labels.io import label_city_cached
from gcl_jax.types import ImageTable, PairTable, SIM_AMBIGUOUS, SIM_POSITIVE


def _mtime(path: str) -> float | None:
  """Modification time of `path` (local: to the nanosecond; URL: as the store keeps it), None when
  it does not exist."""
  if not gcl_io.exists(path):
    return None
  return gcl_io.path(path).stat().mtime if gcl_io.is_url(path) else os.stat(path).st_mtime_ns


def summarize(table: PairTable, query_pano: np.ndarray | None = None,
              database_pano: np.ndarray | None = None) -> dict[str, Any]:
  """Counts of one city's labels (see the module docstring for the keys)."""
  nonzero = table.psi > 0
  soft = int(np.count_nonzero(nonzero & (table.psi < 0.5)))
  pos = int(np.count_nonzero(table.psi >= 0.5))
  out = {
      "queries": table.num_queries, "database": table.num_database, "pairs": table.num_pairs,
      "psi_zero": table.num_queries * table.num_database - soft - pos,
      "psi_soft": soft, "psi_positive": pos,
      "sim_positive": int(np.count_nonzero(table.sim == SIM_POSITIVE)),
      "sim_ambiguous": int(np.count_nonzero(table.sim == SIM_AMBIGUOUS)),
  }
  if query_pano is not None:
    out["query_panoramas"] = int(np.count_nonzero(query_pano))
  if database_pano is not None:
    out["database_panoramas"] = int(np.count_nonzero(database_pano))
  return out


def label_dataset(cities: Iterable[tuple[str, ImageTable, ImageTable]],
                  out_dir: str | None = None, *, num_cities: int | None = None,
                  radius_m: float = DEFAULT_PARAMS["radius_m"],
                  fov_deg: float = DEFAULT_PARAMS["fov_deg"],
                  normalization: str = DEFAULT_PARAMS["normalization"],
                  cutoff_factor: float = DEFAULT_PARAMS["cutoff_factor"],
                  pos_dist_m: float = DEFAULT_PARAMS["pos_dist_m"],
                  neg_dist_m: float = DEFAULT_PARAMS["neg_dist_m"],
                  progress: bool = True) -> dict[str, dict[str, Any]]:
  """Computes the FoV labels of every given city.

  Args:
    cities: (name, query table, database table) of each city, e.g. a generator that reads them
      one by one (then give `num_cities` for the progress bar).
    out_dir: label cache directory (`<out_dir>/<city>_fov.npz` + manifest, reused when the inputs
      and parameters are unchanged); None computes the labels without writing anything.
    num_cities: number of cities, for the progress bar (default len(cities) when it has one).
    radius_m, fov_deg, normalization, cutoff_factor, pos_dist_m, neg_dist_m: labelling parameters
      (see `city_pair_table`; defaults `fov2d.DEFAULT_PARAMS`).
    progress: show a tqdm progress bar over the cities.

  Returns:
    {city: summary} in the order the cities were given (see the module docstring), each summary
    also holding "seconds" (wall time of the city, reading included) and "cached" (True when the
    label file was reused).

  Raises:
    ValueError: on an invalid parameter or no city at all.
  """
  params = {"radius_m": radius_m, "fov_deg": fov_deg, "normalization": normalization,
            "cutoff_factor": cutoff_factor, "pos_dist_m": pos_dist_m, "neg_dist_m": neg_dist_m}
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    total = num_cities if num_cities is not None else getattr(cities, "__len__", lambda: None)()
    bar = tqdm(total=total, desc="labelling cities", unit="city")
  out = {}
  try:
    t0 = time.perf_counter()
    for city, query, database in cities:
      if bar is not None:
        bar.set_postfix_str(city)
      label_file, cached = None, False
      if out_dir is None:
        table = city_pair_table(query, database, **params)
      else:
        label_file = gcl_io.join(out_dir, f"{city}_fov.npz")
        before = _mtime(label_file)
        table = label_city_cached(query, database, out_dir, city, **params)
        cached = before is not None and _mtime(label_file) == before
      out[city] = {**summarize(table, query.pano, database.pano), "label_file": label_file,
                   "cached": cached, "seconds": round(time.perf_counter() - t0, 3)}
      if bar is not None:
        bar.update(1)
      t0 = time.perf_counter()
  finally:
    if bar is not None:
      bar.close()
  if not out:
    raise ValueError("no cities to label")
  return out


_COLUMNS = ("queries", "database", "pairs", "psi_zero", "psi_soft", "psi_positive", "sim_positive",
            "sim_ambiguous", "query_panoramas", "database_panoramas")


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
  """A fixed-width table of `label_dataset`'s result, one row per city plus a total row."""
  heads = ("city", "queries", "database", "pairs", "psi=0", "0<psi<.5", "psi>=.5", "sim=1",
           "ambig", "q_pano", "db_pano")
  widths = [max(12, *(len(c) for c in summary))] + [max(len(h), 11) for h in heads[1:]]
  lines = [" ".join(h.rjust(w) for h, w in zip(heads, widths))]
  total = {k: 0 for k in _COLUMNS}
  for city, s in summary.items():
    lines.append(" ".join([city.rjust(widths[0])] + [str(s.get(k, "")).rjust(w) for k, w in
                                                    zip(_COLUMNS, widths[1:])]))
    for k in _COLUMNS:
      total[k] += int(s.get(k, 0))
  if len(summary) > 1:
    lines.append(" ".join(["TOTAL".rjust(widths[0])] + [str(total[k]).rjust(w) for k, w in
                                                       zip(_COLUMNS, widths[1:])]))
  return "\n".join(lines)

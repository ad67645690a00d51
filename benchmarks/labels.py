"""Benchmark: sparse FoV labelling of a city (city_pair_table) vs the dense all-pairs matrix.

A synthetic street-grid city (gcl_jax.labels.synthetic_city: a camera every ~3 m, 4 headings
relative to the street) of `--size` queries x `--size` database images is labelled with
`city_pair_table` (k-d tree radius search + exact sector overlap, sparse output). The reference is
the approach the authors' `<city>_gt.h5` files imply: every (query, database) pair evaluated and
stored in a dense float32 [Nq, Ndb] matrix. It is measured on a smaller city (`--dense_size`,
default 3,000 x 3,000) and extrapolated quadratically (time and memory x (size / dense_size)^2);
extrapolated figures are labelled so.

Prints one JSON object per measurement and, last, a summary with `ratio` = dense time per pair /
ours time per pair (at full size, both per all Nq x Ndb pairs; > 1 means ours is faster), and
`ratio_fit`, the same with the dense time extrapolated by a two-point fit a N^2 + b N (the dense
approach's cost has a linear part too: the overlap of the near pairs), which is the fairer figure.

    python benchmarks/labels.py             # 30,000 x 30,000 (the goal: < 60 s, < 2 GB)
    python benchmarks/labels.py --size=5000 # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gcl_jax.labels.fov2d import city_pair_table, fov_overlap  # noqa: E402
from gcl_jax.labels.synthetic_city import street_city  # noqa: E402

_MB = 1024.0 * 1024.0


def _rss_mb() -> float:
  """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dense_labels(query, database, block: int = 256, **params) -> np.ndarray:
  """All-pairs float32 [Nq, Ndb] FoV matrix, computed block of query rows by block (reference)."""
  out = np.zeros((len(query), len(database)), np.float32)
  for q0 in range(0, len(query), block):
    q1 = min(q0 + block, len(query))
    out[q0:q1] = fov_overlap(query.utm[q0:q1, None, :], query.heading[q0:q1, None],
                             database.utm[None, :, :], database.heading[None, :], **params)
  return out


def measure(fn):
  """(result, seconds, tracemalloc peak MB) of fn().

  fn runs twice: once timed without tracing (tracemalloc slows NumPy allocations down), then once
  under tracemalloc for the peak of the Python/NumPy heap it allocates.
  """
  t0 = time.perf_counter()
  result = fn()
  seconds = time.perf_counter() - t0
  del result
  tracemalloc.start()
  result = fn()
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return result, seconds, peak / _MB


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", type=int, default=30_000, help="queries (and database images)")
  p.add_argument("--dense_size", type=int, default=3_000,
                 help="size of the city the dense reference is measured on")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  params = {"radius_m": 50.0, "fov_deg": 90.0, "normalization": "ratio", "cutoff_factor": 2.0}
  n, nd = args.size, min(args.dense_size, args.size)

  query, database = street_city(n, n, seed=args.seed)
  table, t_ours, mem_ours = measure(lambda: city_pair_table(query, database, **params))
  all_pairs = n * n
  ours = {"name": "sparse_city_pair_table", "queries": n, "database": n,
          "listed_pairs": table.num_pairs, "nonzero_psi": int(np.count_nonzero(table.psi)),
          "seconds": round(t_ours, 3), "all_pairs_per_s": round(all_pairs / t_ours),
          "listed_pairs_per_s": round(table.num_pairs / t_ours),
          "tracemalloc_peak_mb": round(mem_ours, 1), "ru_maxrss_mb": round(_rss_mb(), 1),
          "output_mb": round(sum(getattr(table, k).nbytes for k in
                                 ("indptr", "db_idx", "psi", "sim", "dist")) / _MB, 1)}
  print(json.dumps(ours), flush=True)

  q_s, d_s = street_city(nd, nd, seed=args.seed)
  sparse_small, t_small, _ = measure(lambda: city_pair_table(q_s, d_s, **params))
  dense, t_dense, mem_dense = measure(lambda: dense_labels(q_s, d_s, **params))
  max_diff = float(np.max(np.abs(dense - sparse_small.dense("psi"))))
  measured = {"name": "dense_all_pairs_measured", "queries": nd, "database": nd,
              "seconds": round(t_dense, 3), "all_pairs_per_s": round(nd * nd / t_dense),
              "tracemalloc_peak_mb": round(mem_dense, 1), "matrix_mb": round(dense.nbytes / _MB, 1),
              "sparse_seconds_same_city": round(t_small, 3),
              "max_abs_diff_vs_sparse": max_diff}
  print(json.dumps(measured), flush=True)
  del dense
  # A second, smaller dense city for a two-term fit t = a N^2 + b N: the dense approach also
  # computes the overlap of the near pairs (a number that grows only linearly), so the pure
  # quadratic extrapolation overstates its time somewhat; both are printed.
  n3 = max(nd // 3, 1)
  q3, d3 = street_city(n3, n3, seed=args.seed)
  _, t3, _ = measure(lambda: dense_labels(q3, d3, **params))
  a, b = np.linalg.solve(np.array([[nd * nd, nd], [n3 * n3, n3]], np.float64), [t_dense, t3])
  t_fit = max(a * n * n + b * n, 0.0)
  scale = (n / nd) ** 2
  extrapolated = {"name": "dense_all_pairs_EXTRAPOLATED", "extrapolated": True,
                  "from_size": nd, "queries": n, "database": n,
                  "seconds": round(t_dense * scale, 1),
                  "seconds_fit_aN2_bN": round(t_fit, 1), "fit_sizes": [n3, nd],
                  "tracemalloc_peak_mb": round(mem_dense * scale, 1),
                  "matrix_mb": round(4.0 * n * n / _MB, 1)}
  print(json.dumps(extrapolated), flush=True)
  ratio = (t_dense / (nd * nd)) / (t_ours / all_pairs)
  print(json.dumps({
      "summary": "labels", "size": n, "ours_seconds": ours["seconds"],
      "ours_all_pairs_per_s": ours["all_pairs_per_s"],
      "ours_tracemalloc_peak_mb": ours["tracemalloc_peak_mb"],
      "ru_maxrss_mb": round(_rss_mb(), 1),
      "dense_seconds_extrapolated": extrapolated["seconds"],
      "dense_peak_mb_extrapolated": extrapolated["tracemalloc_peak_mb"],
      "dense_seconds_fit_aN2_bN": extrapolated["seconds_fit_aN2_bN"],
      "dense_measured_size": nd, "max_abs_diff_dense_vs_sparse": max_diff,
      "ratio": round(ratio, 2), "ratio_fit": round(t_fit / t_ours, 2),
      "goal_met": bool(t_ours < 60.0 and max(mem_ours, _rss_mb()) < 2048.0)}), flush=True)


if __name__ == "__main__":
  main()

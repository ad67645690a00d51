"""`python -m gcl_jax.labels`: label a whole MSLS-layout dataset and print a summary per city.

    python -m gcl_jax.labels --root=/data/msls --out_dir=/data/msls_labels [--cities=cph,sf]
        [--radius_m=50 --fov_deg=90 --normalization=ratio --cutoff_factor=2]
        [--plot_city=cph --plot_query=0 --plot_png=query0.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  p = argparse.ArgumentParser(prog="python -m gcl_jax.labels", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--root", required=True, help="dataset root (holds <split>/<city>/...)")
  p.add_argument("--cities", default=None, help="comma-separated cities (default: all)")
  p.add_argument("--out_dir", default=None, help="label cache directory (default: do not write)")
  p.add_argument("--split", default="train_val")
  p.add_argument("--radius_m", type=float, default=50.0)
  p.add_argument("--fov_deg", type=float, default=90.0)
  p.add_argument("--normalization", default="ratio", choices=("ratio", "iou"))
  p.add_argument("--cutoff_factor", type=float, default=2.0)
  p.add_argument("--pos_dist_m", type=float, default=10.0)
  p.add_argument("--neg_dist_m", type=float, default=25.0)
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  p.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
  p.add_argument("--plot_city", default=None, help="city of the query to draw")
  p.add_argument("--plot_query", type=int, default=0, help="query row to draw")
  p.add_argument("--plot_png", default=None, help="output picture (needs --plot_city)")
  args = p.parse_args(argv)

  # Imported here so that `--help` is fast.
  # pylint: disable-next=g-import-not-at-top
  from gcl_jax.labels.dataset import format_summary, label_dataset
  params = dict(radius_m=args.radius_m, fov_deg=args.fov_deg, normalization=args.normalization,
                cutoff_factor=args.cutoff_factor, pos_dist_m=args.pos_dist_m,
                neg_dist_m=args.neg_dist_m)
  summary = label_dataset(args.root, args.cities, args.out_dir, split=args.split,
                          progress=not args.no_progress, **params)
  print(format_summary(summary))
  if args.json:
    print(json.dumps(summary, sort_keys=True))
  if args.plot_png:
    if not args.plot_city:
      p.error("--plot_png needs --plot_city")
    from gcl_jax.data.msls import read_msls_city  # pylint: disable=g-import-not-at-top
    from gcl_jax.labels.fov2d import city_pair_table  # pylint: disable=g-import-not-at-top
    from gcl_jax.labels.io import label_city_cached  # pylint: disable=g-import-not-at-top
    from gcl_jax.labels.plot import plot_query_labels  # pylint: disable=g-import-not-at-top
    query, database = read_msls_city(args.root, args.plot_city, args.split)
    if args.out_dir:
      table = label_city_cached(query, database, args.out_dir, args.plot_city, **params)
    else:
      table = city_pair_table(query, database, **params)
    print(f"wrote {plot_query_labels(query, database, table, args.plot_query, args.plot_png)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

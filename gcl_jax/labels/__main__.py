"""`python -m gcl_jax.labels`: label a whole MSLS-layout dataset and print a summary per city.

    python -m gcl_jax.labels --root=/data/msls --out_dir=/data/msls_labels [--cities=cph,sf]
        [--radius_m=50 --fov_deg=90 --normalization=ratio --cutoff_factor=2]
        [--plot_city=cph --plot_query=0 --plot_png=query0.png]

The cities (all of `<root>/<split>` by default) are read one at a time with the MSLS reader
(gcl_jax.data.msls) and labelled with gcl_jax.labels.dataset.label_dataset; the labelling
defaults are gcl_jax.labels.fov2d.DEFAULT_PARAMS. Exit status: 0 on success, 2 on a bad command
line (missing flag, bad value, unknown city), 1 when the dataset cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags

from gcl_jax import cli
from gcl_jax.labels.fov2d import DEFAULT_PARAMS
from gcl_jax.types import DatasetError

_CLI = cli.Command("python -m gcl_jax.labels", __doc__)


def _define_flags() -> flags.FlagValues:
  """This command line's flags, on their own FlagValues (other CLIs may share the process)."""
  fv = flags.FlagValues()
  flags.DEFINE_string("root", None, "dataset root (holds <split>/<city>/...)", flag_values=fv,
                      required=True)
  flags.DEFINE_list("cities", ["all"], "comma-separated cities; empty or 'all': every city "
                    "folder under <root>/<split>", flag_values=fv)
  flags.DEFINE_string("out_dir", None, "label cache directory (default: do not write)",
                      flag_values=fv)
  flags.DEFINE_string("split", "train_val", "dataset split folder", flag_values=fv)
  flags.DEFINE_float("radius_m", DEFAULT_PARAMS["radius_m"], "sector radius, metres",
                     flag_values=fv)
  flags.DEFINE_float("fov_deg", DEFAULT_PARAMS["fov_deg"], "sector angle, degrees",
                     flag_values=fv)
  flags.DEFINE_enum("normalization", DEFAULT_PARAMS["normalization"], ["ratio", "iou"],
                    "overlap normalization", flag_values=fv)
  flags.DEFINE_float("cutoff_factor", DEFAULT_PARAMS["cutoff_factor"],
                     "pairs farther apart than cutoff_factor * radius_m get psi = 0",
                     flag_values=fv)
  flags.DEFINE_float("pos_dist_m", DEFAULT_PARAMS["pos_dist_m"],
                     "binary label: positive within this distance, metres", flag_values=fv)
  flags.DEFINE_float("neg_dist_m", DEFAULT_PARAMS["neg_dist_m"],
                     "binary label: negative beyond this distance, metres", flag_values=fv)
  flags.DEFINE_bool("no_progress", False, "no progress bar", flag_values=fv)
  flags.DEFINE_bool("json", False, "also print the summary as one JSON line", flag_values=fv)
  flags.DEFINE_string("plot_city", None, "city of the query to draw", flag_values=fv)
  flags.DEFINE_integer("plot_query", 0, "query row to draw", flag_values=fv)
  flags.DEFINE_string("plot_png", None, "output picture (needs --plot_city)", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point.

  Args:
    argv: the arguments after the program name (default sys.argv[1:]).

  Returns:
    The exit status (see the module docstring).
  """
  fv = _define_flags()
  status = _CLI.parse(fv, argv)
  if isinstance(status, int):
    return status
  if fv.plot_png and not fv.plot_city:
    return _CLI.error("--plot_png needs --plot_city", 2)
  params = {k: fv[k].value for k in DEFAULT_PARAMS}

  # Imported here so that `--help` is fast; the CLI composes the data readers and the labels.
  from gcl_jax.data import msls  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from gcl_jax.labels.dataset import format_summary, label_dataset
  from gcl_jax.labels.fov2d import pair_table_params  # pylint: disable=g-import-not-at-top
  try:
    pair_table_params(**params)
  except ValueError as e:
    return _CLI.error(str(e), 2)
  try:
    found = msls.list_cities(fv.root, fv.split)
  except FileNotFoundError as e:
    return _CLI.error(str(e), 1)
  base = f"{fv.root.rstrip('/')}/{fv.split}"
  names = [c for c in fv.cities if c]
  if not names or names == ["all"]:
    if not found:
      return _CLI.error(f"no city under {base} (a city is a folder with a query/ subfolder)", 1)
    names = found
  missing = [c for c in names if c not in found]
  if missing:
    return _CLI.error(f"--cities: {', '.join(map(repr, missing))} not found under {base} (has: "
                      f"{', '.join(found) or 'no city'})", 2)
  if fv.plot_city and fv.plot_city not in found:
    return _CLI.error(f"--plot_city: {fv.plot_city!r} not found under {base} (has: "
                      f"{', '.join(found)})", 2)

  try:
    # The cities are read one by one, as `label_dataset` asks for them.
    cities = ((name, *msls.read_msls_city(fv.root, name, fv.split)) for name in names)
    summary = label_dataset(cities, fv.out_dir, num_cities=len(names),
                            progress=not fv.no_progress, **params)
  except (DatasetError, FileNotFoundError) as e:
    return _CLI.error(str(e), 1)
  print(format_summary(summary))
  if fv.json:
    print(json.dumps(summary, sort_keys=True))
  if fv.plot_png:
    from gcl_jax.labels.fov2d import city_pair_table  # pylint: disable=g-import-not-at-top
    from gcl_jax.labels.io import label_city_cached  # pylint: disable=g-import-not-at-top
    from gcl_jax.labels.plot import plot_query_labels  # pylint: disable=g-import-not-at-top
    query, database = msls.read_msls_city(fv.root, fv.plot_city, fv.split)
    if fv.out_dir:
      table = label_city_cached(query, database, fv.out_dir, fv.plot_city, **params)
    else:
      table = city_pair_table(query, database, **params)
    try:
      png = plot_query_labels(query, database, table, fv.plot_query, fv.plot_png)
    except IndexError as e:
      return _CLI.error(f"--plot_query: {e}", 2)
    print(f"wrote {png}")
  return 0


if __name__ == "__main__":
  cli.run(main)

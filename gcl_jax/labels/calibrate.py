"""Fits the FoV-sector parameters to the authors' released `<city>_gt.h5` labels (grid search).

The authors never published r, theta, the normalization or their distance cut-off
(GCL_REFERENCE.md section 2.3). Given one city's released `fov` matrix and the city's metadata,
`calibrate` recomputes psi for every candidate of the grid

    radius_m in {25, 30, 40, 50, 60, 75, 100}, fov_deg in {60, 70, 80, 90, 100, 120},
    normalization in {ratio, iou}, cutoff_factor in {1, 2}

and scores it against the file:

* mae: mean |ours - theirs| over the pairs where either value is > 0;
* zero_agreement: fraction of ALL compared pairs where both are 0 or both are > 0;
* support_jaccard: |both > 0| / |either > 0|;
* bin_agreement: fraction of ALL compared pairs that fall in the same training bin
  {0}, (0, 0.5), [0.5, 1] (GCL_REFERENCE.md 3.3 step 5); bin_agreement_nonzero: the same over the
  pairs where either value is > 0 (the all-pairs figure is dominated by far-apart pairs).

Pairs involving a panorama or an image without a finite heading are left out of every figure
(upstream never trains on them, and their compass angle is meaningless). Candidates are ranked by
mae, then bin_agreement_nonzero, then support_jaccard.

Command line:

    python -m gcl_jax.labels.calibrate --h5=ROOT/train_val/amman_gt.h5 --root=ROOT --city=amman
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from absl import flags
import numpy as np
from scipy import spatial

from gcl_jax import cli
from gcl_jax.types import ImageTable
from gcl_jax.labels.fov2d import fov_overlap
from gcl_jax.types import DatasetError, PairTable

RADII_M = (25.0, 30.0, 40.0, 50.0, 60.0, 75.0, 100.0)
FOVS_DEG = (60.0, 70.0, 80.0, 90.0, 100.0, 120.0)
NORMALIZATIONS = ("ratio", "iou")
CUTOFF_FACTORS = (1.0, 2.0)


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
  """Agreement of one parameter candidate with the reference labels (see the module docstring)."""

  radius_m: float
  fov_deg: float
  normalization: str
  cutoff_factor: float
  mae: float
  max_abs_error: float
  zero_agreement: float
  support_jaccard: float
  bin_agreement: float
  bin_agreement_nonzero: float
  num_nonzero: int  # pairs where either value is > 0.
  num_compared: int  # all (query, database) pairs compared (panoramas excluded).

  def params(self) -> dict:
    """The candidate as keyword arguments of `city_pair_table` / `fov_overlap`."""
    return {"radius_m": self.radius_m, "fov_deg": self.fov_deg,
            "normalization": self.normalization, "cutoff_factor": self.cutoff_factor}


def _bins(x: np.ndarray) -> np.ndarray:
  """Training bin of each value: 0 for {0}, 1 for (0, 0.5), 2 for [0.5, 1]."""
  return np.where(x <= 0.0, 0, np.where(x < 0.5, 1, 2))


def calibrate(query: ImageTable, database: ImageTable, reference: PairTable, *,
              radii_m: Sequence[float] = RADII_M, fovs_deg: Sequence[float] = FOVS_DEG,
              normalizations: Sequence[str] = NORMALIZATIONS,
              cutoff_factors: Sequence[float] = CUTOFF_FACTORS) -> list[CalibrationResult]:
  """Scores every grid candidate against `reference` (e.g. `read_gt_h5(...)`), best first.

  Args:
    query, database: the city's image tables (rows in the order of the reference matrix).
    reference: the reference labels; only `psi` is used.
    radii_m, fovs_deg, normalizations, cutoff_factors: the grid.

  Returns:
    One CalibrationResult per candidate, sorted best first.

  Raises:
    ValueError: if the reference's shape differs from the tables' sizes, a grid is empty, or a
      UTM position is not finite.
  """
  nq, ndb = len(query), len(database)
  if (reference.num_queries, reference.num_database) != (nq, ndb):
    raise ValueError(f"reference labels are {reference.num_queries} x {reference.num_database} "
                     f"but the city has {nq} queries x {ndb} database images")
  for name, grid in (("radii_m", radii_m), ("fovs_deg", fovs_deg),
                     ("normalizations", normalizations), ("cutoff_factors", cutoff_factors)):
    if len(grid) == 0:
      raise ValueError(f"calibrate: the grid `{name}` is empty")
  for what, t in (("query", query), ("database", database)):
    bad = np.flatnonzero(~np.all(np.isfinite(t.utm), axis=1))
    if len(bad):
      raise ValueError(f"{what} table {t.name!r}: row {bad[0]} (key {t.keys[bad[0]]!r}) has a "
                       f"non-finite UTM position")
  q_ok = ~np.asarray(query.pano, bool) & np.isfinite(query.heading)
  db_ok = ~np.asarray(database.pano, bool) & np.isfinite(database.heading)
  num_compared = int(q_ok.sum()) * int(db_ok.sum())

  # Candidate pairs: every valid pair within the largest possible reach, plus every reference pair
  # with psi > 0 (whatever its distance), as sorted flat keys q * ndb + db.
  reach = 2.0 * max(float(r) for r in radii_m)
  keys = [np.zeros(0, np.int64)]
  if nq and ndb:
    found = spatial.cKDTree(query.utm).sparse_distance_matrix(
        spatial.cKDTree(database.utm), reach * (1 + 1e-9), output_type="ndarray")
    keys.append(found["i"].astype(np.int64) * ndb + found["j"].astype(np.int64))
  ref_q = reference.q_idx.astype(np.int64)
  ref_keys = ref_q * ndb + reference.db_idx
  pos = reference.psi > 0
  keys.append(ref_keys[pos])
  keys = np.unique(np.concatenate(keys))
  qi, dj = keys // ndb, keys % ndb
  ok = q_ok[qi] & db_ok[dj]
  keys, qi, dj = keys[ok], qi[ok], dj[ok]
  ref = np.zeros(len(keys), np.float64)
  at = np.searchsorted(keys, ref_keys[pos])
  hit = (at < len(keys)) & (keys[np.minimum(at, len(keys) - 1)] == ref_keys[pos])
  ref[at[hit]] = reference.psi[pos][hit]
  ref_bin = _bins(ref)
  dist = np.hypot(*(database.utm[dj] - query.utm[qi]).T)
  pa, ha = query.utm[qi], query.heading[qi]
  pb, hb = database.utm[dj], database.heading[dj]

  results = []
  for r in radii_m:
    near = np.flatnonzero(dist <= 2.0 * float(r))
    for fov in fovs_deg:
      ratio = np.zeros(len(keys), np.float64)
      ratio[near] = fov_overlap(pa[near], ha[near], pb[near], hb[near], radius_m=float(r),
                                fov_deg=float(fov), normalization="ratio", cutoff_factor=2.0)
      for cut in cutoff_factors:
        cut_psi = np.where(dist > float(cut) * float(r), 0.0, ratio)
        for norm in normalizations:
          ours = cut_psi / (2.0 - cut_psi) if norm == "iou" else cut_psi
          ours = ours.astype(np.float32).astype(np.float64)  # as stored in a PairTable.
          either = (ours > 0) | (ref > 0)
          n_either = int(either.sum())
          err = np.abs(ours - ref)[either]
          zero_dis = int(np.sum((ours > 0) != (ref > 0)))
          bin_dis = int(np.sum(_bins(ours) != ref_bin))
          results.append(CalibrationResult(
              radius_m=float(r), fov_deg=float(fov), normalization=str(norm),
              cutoff_factor=float(cut),
              mae=float(err.mean()) if n_either else 0.0,
              max_abs_error=float(err.max()) if n_either else 0.0,
              zero_agreement=1.0 - zero_dis / num_compared if num_compared else 1.0,
              support_jaccard=float(np.sum((ours > 0) & (ref > 0))) / n_either if n_either
              else 1.0,
              bin_agreement=1.0 - bin_dis / num_compared if num_compared else 1.0,
              bin_agreement_nonzero=1.0 - bin_dis / n_either if n_either else 1.0,
              num_nonzero=n_either, num_compared=num_compared))
  results.sort(key=lambda c: (c.mae, -c.bin_agreement_nonzero, -c.support_jaccard))
  return results


def calibrate_h5(h5_path: str, query: ImageTable, database: ImageTable,
                 **grid: Sequence) -> list[CalibrationResult]:
  """Reads a city's `<city>_gt.h5` and runs `calibrate` on it.

  Args:
    h5_path: the authors' label file of the city.
    query, database: the city's image tables, e.g. from `gcl_jax.data.msls.read_msls_city`
      (the caller reads them; the labels never import a data reader).
    **grid: the grid keywords of `calibrate`.

  Returns:
    One CalibrationResult per candidate, sorted best first.

  Raises:
    FileNotFoundError, H5LabelError: if the file cannot be read or its shape differs from the
      tables' sizes.
    ValueError: as `calibrate`.
  """
  from gcl_jax.labels.h5 import read_gt_h5  # pylint: disable=g-import-not-at-top
  reference = read_gt_h5(h5_path, len(query), len(database))
  return calibrate(query, database, reference, **grid)


def format_results(results: Sequence[CalibrationResult], top: int = 10) -> str:
  """A fixed-width table of the `top` best candidates."""
  lines = [f"{'rank':>4} {'r_m':>6} {'fov':>6} {'norm':>5} {'cut':>4} {'mae':>9} {'max_err':>8} "
           f"{'zero_agr':>9} {'jaccard':>8} {'bin_agr':>9} {'bin_agr_nz':>10}"]
  for i, c in enumerate(results[:top]):
    lines.append(f"{i + 1:>4} {c.radius_m:>6g} {c.fov_deg:>6g} {c.normalization:>5} "
                 f"{c.cutoff_factor:>4g} {c.mae:>9.2e} {c.max_abs_error:>8.4f} "
                 f"{c.zero_agreement:>9.6f} {c.support_jaccard:>8.4f} {c.bin_agreement:>9.6f} "
                 f"{c.bin_agreement_nonzero:>10.4f}")
  return "\n".join(lines)


_CLI = cli.Command("python -m gcl_jax.labels.calibrate", __doc__)


class _FloatListParser(flags.ListParser):
  """A comma-separated list of numbers, e.g. `--radii=30,40`."""

  def parse(self, argument):
    values = [float(x) for x in super().parse(argument) if x != ""]
    if not values:
      raise ValueError("needs at least one number")
    return values


def _define_flags() -> flags.FlagValues:
  """The command line's flags, on their own FlagValues (other CLIs may share the process)."""
  fv = flags.FlagValues()
  flags.DEFINE_string("h5", None, "the authors' <city>_gt.h5", flag_values=fv, required=True)
  flags.DEFINE_string("root", None, "MSLS root (holds <split>/<city>/...)", flag_values=fv,
                      required=True)
  flags.DEFINE_string("city", None, "city of the .h5 file", flag_values=fv, required=True)
  flags.DEFINE_string("split", "train_val", "dataset split folder", flag_values=fv)
  csv_floats = flags.CsvListSerializer(",")
  flags.DEFINE(_FloatListParser(), "radii", list(RADII_M), "comma-separated radii, metres",
               flag_values=fv, serializer=csv_floats)
  flags.DEFINE(_FloatListParser(), "fovs", list(FOVS_DEG), "comma-separated angles, degrees",
               flag_values=fv, serializer=csv_floats)
  flags.DEFINE_list("normalizations", list(NORMALIZATIONS), "comma-separated, each one of "
                    f"{','.join(NORMALIZATIONS)}", flag_values=fv)
  flags.register_validator(
      "normalizations", lambda v: bool(v) and all(n in NORMALIZATIONS for n in v),
      message=f"each must be one of {','.join(NORMALIZATIONS)} (at least one)", flag_values=fv)
  flags.DEFINE(_FloatListParser(), "cutoffs", list(CUTOFF_FACTORS),
               "comma-separated cut-off factors", flag_values=fv, serializer=csv_floats)
  flags.DEFINE_integer("top", 10, "rows of the ranking to print", lower_bound=1, flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point: prints the ranking and, last, the best candidate as JSON.

  Args:
    argv: the arguments after the program name (default sys.argv[1:]).

  Returns:
    The exit status: 0 on success (and for --help), 2 on a bad command line, 1 when the files
    cannot be read or do not match.
  """
  fv = _define_flags()
  status = _CLI.parse(fv, argv)
  if isinstance(status, int):
    return status
  # The CLI composes the MSLS reader and the labels (the library function takes the tables).
  from gcl_jax.data.msls import read_msls_city  # pylint: disable=g-import-not-at-top
  try:
    query, database = read_msls_city(fv.root, fv.city, fv.split)
    results = calibrate_h5(fv.h5, query, database, radii_m=tuple(fv.radii),
                           fovs_deg=tuple(fv.fovs), normalizations=tuple(fv.normalizations),
                           cutoff_factors=tuple(fv.cutoffs))
  except (DatasetError, OSError, ValueError) as e:
    return _CLI.error(str(e), 1)
  print(f"city {fv.city}: {results[0].num_compared} pairs compared (panoramas excluded), "
        f"{len(results)} candidates")
  print(format_results(results, fv.top))
  print(json.dumps({"best": dataclasses.asdict(results[0])}, sort_keys=True))
  return 0


if __name__ == "__main__":
  cli.run(main)

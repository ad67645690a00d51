"""Calibration of the FoV parameters against a `<city>_gt.h5` generated with known parameters."""

import dataclasses
import json

import numpy as np
import pytest

from gcl_jax.labels import city_pair_table
from gcl_jax.labels.calibrate import calibrate, calibrate_h5, main
from gcl_jax.labels.h5 import read_gt_h5, write_gt_h5
from gcl_jax.data.msls import read_msls_city, write_msls_city
from gcl_jax.labels.synthetic_city import street_city

TRUE = {"radius_m": 40.0, "fov_deg": 70.0, "normalization": "iou", "cutoff_factor": 1.0}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
  """A small synthetic MSLS city with 2 and 3 panoramas and its generated label file."""
  root = tmp_path_factory.mktemp("msls")
  q, d = street_city(150, 200, pano_every=75, seed=7)
  write_msls_city(str(root), "toyville", q, d)
  h5 = root / "train_val" / "toyville_gt.h5"
  write_gt_h5(str(h5), city_pair_table(q, d, **TRUE))
  return root, h5, q, d


def test_recovers_known_parameters(city):
  root, h5, _, _ = city
  query, database = read_msls_city(str(root), "toyville")  # the tables as written to disk.
  results = calibrate_h5(str(h5), query, database)
  assert len(results) == 7 * 6 * 2 * 2  # the full grid of GCL_REFERENCE.md 2.3.
  best = results[0]
  assert best.params() == TRUE
  assert best.mae < 1e-6 and best.max_abs_error < 1e-6
  assert best.zero_agreement == 1.0 and best.support_jaccard == 1.0
  assert best.bin_agreement == 1.0 and best.bin_agreement_nonzero == 1.0
  assert best.num_compared == 148 * 197  # panoramas (2 + 3) excluded.
  # Each wrong single parameter is measurably worse (the synthetic city separates them).
  by_params = {tuple(r.params().values()): r for r in results}
  for key, wrong in (("radius_m", 50.0), ("fov_deg", 80.0), ("normalization", "ratio"),
                     ("cutoff_factor", 2.0)):
    other = by_params[tuple({**TRUE, key: wrong}.values())]
    assert other.mae > 1e-3, key


def test_ratio_cutoff2_also_recovered(city):
  """Another generating point, on the in-memory API with a reduced grid."""
  _, _, q, d = city
  params = {"radius_m": 60.0, "fov_deg": 100.0, "normalization": "ratio", "cutoff_factor": 2.0}
  ref = city_pair_table(q, d, **params)
  results = calibrate(q, d, ref, radii_m=(40.0, 60.0), fovs_deg=(90.0, 100.0))
  assert results[0].params() == params and results[0].mae < 1e-6
  assert len(results) == 2 * 2 * 2 * 2


def test_command_line_prints_agreement(city, capsys):
  root, h5, _, _ = city
  assert main([f"--h5={h5}", f"--root={root}", "--city=toyville", "--radii=30,40",
               "--fovs=70,90", "--top=3"]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert "mae" in out[1] and "bin_agr" in out[1]
  assert len(out) == 2 + 3 + 1
  best = json.loads(out[-1])["best"]
  assert (best["radius_m"], best["fov_deg"], best["normalization"], best["cutoff_factor"]) == (
      40.0, 70.0, "iou", 1.0)
  assert best["mae"] < 1e-6


def test_command_line_help(capsys):
  assert main(["--help"]) == 0
  out = capsys.readouterr().out
  assert "--h5" in out and "(default: '25.0,30.0,40.0,50.0,60.0,75.0,100.0')" in out


@pytest.mark.parametrize("argv, status, message", [
    (["--city=toyville"], 2, "flag --h5=None: Flag --h5 must have a value"),
    (["--radii=30,x"], 2, "flag --radii=30,x: could not convert string to float: 'x'"),
    (["--fovs="], 2, "flag --fovs=: needs at least one number"),
    (["--normalizations=ratio,cos"], 2, "each must be one of ratio,iou"),
    (["--top=0"], 2, "flag --top=0: 0 is not a positive integer"),
    (["--city=nowhere"], 1, "train_val/nowhere/query: directory not found"),
])
def test_command_line_errors(city, capsys, argv, status, message):
  """A bad command line prints one line naming the fault and returns non-zero, no traceback."""
  root, h5, _, _ = city
  base = [] if argv == ["--city=toyville"] else [f"--h5={h5}", "--city=toyville"]
  assert main([*base, f"--root={root}", *argv]) == status
  captured = capsys.readouterr()
  assert captured.out == ""
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("python -m gcl_jax.labels.calibrate: error: "), err
  assert message in err[0]


def test_size_mismatch(city):
  _, h5, q, d = city
  ref = read_gt_h5(str(h5))
  fewer = dataclasses.replace(q, **{k: getattr(q, k)[:-1] for k in (
      "paths", "keys", "utm", "heading", "pano", "night", "in_all")})
  with pytest.raises(ValueError, match="150 x 200 but the city has 149 queries"):
    calibrate(fewer, d, ref)

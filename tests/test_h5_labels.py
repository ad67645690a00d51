"""Reading the authors' `<city>_gt.h5` label files row-wise into a sparse PairTable."""

import h5py
import numpy as np
import pytest

from gcl_jax.labels import city_pair_table
from gcl_jax.labels.h5 import H5LabelError, read_gt_h5, write_gt_h5
from gcl_jax.labels.synthetic_city import street_city
from gcl_jax.types import SIM_NEGATIVE, SIM_POSITIVE


def write_raw(path, fov, sim):
  with h5py.File(path, "w") as f:
    f.create_dataset("fov", data=np.asarray(fov))
    f.create_dataset("sim", data=np.asarray(sim))


def test_small_matrix_exact(tmp_path):
  """A hand-made 3 x 4 file: listed = fov > 0 or sim == 1, sorted, sim mapped, dist NaN."""
  fov = np.array([[0.0, 0.7, 0.0, 0.2],
                  [0.0, 0.0, 0.0, 0.0],
                  [0.5, 0.0, 0.0, 0.0]], np.float64)
  sim = np.array([[0, 1, 1, 0],
                  [0, 0, 0, 0],
                  [0, 0, 0, 0]], np.uint8)
  path = tmp_path / "x_gt.h5"
  write_raw(path, fov, sim)
  for block in (1, 2, 256):  # block boundaries must not matter.
    t = read_gt_h5(str(path), 3, 4, block_rows=block)
    np.testing.assert_array_equal(t.indptr, [0, 3, 3, 4])
    np.testing.assert_array_equal(t.db_idx, [1, 2, 3, 0])
    np.testing.assert_allclose(t.psi, [0.7, 0.0, 0.2, 0.5], rtol=1e-7)
    np.testing.assert_array_equal(t.sim, [SIM_POSITIVE, SIM_POSITIVE, SIM_NEGATIVE, SIM_NEGATIVE])
    assert np.all(np.isnan(t.dist))
    np.testing.assert_allclose(t.dense("psi"), fov, rtol=1e-7)
    assert t.params["method"].startswith("authors-gt-h5")


def test_roundtrip_synthetic_city(tmp_path):
  """write_gt_h5 then read_gt_h5 gives back psi and positives of a computed table exactly."""
  q, d = street_city(120, 150, seed=3)
  table = city_pair_table(q, d, radius_m=40.0, fov_deg=70.0)
  path = str(tmp_path / "c_gt.h5")
  write_gt_h5(path, table, block_rows=7)
  back = read_gt_h5(path, len(q), len(d), block_rows=13)
  np.testing.assert_array_equal(back.dense("psi"), table.dense("psi"))
  np.testing.assert_array_equal(back.dense("sim") == SIM_POSITIVE,
                                table.dense("sim") == SIM_POSITIVE)
  assert back.num_pairs < table.num_pairs  # zero-psi non-positive pairs are not listed.


def test_shape_mismatch_names_file_and_sizes(tmp_path):
  path = tmp_path / "amman_gt.h5"
  write_raw(path, np.zeros((3, 4)), np.zeros((3, 4)))
  with pytest.raises(H5LabelError, match=r"amman_gt\.h5.*3 rows.*city has 5 queries"):
    read_gt_h5(str(path), 5, 4)
  with pytest.raises(H5LabelError, match=r"4 columns.*city has 6 database"):
    read_gt_h5(str(path), 3, 6)


def test_invalid_contents(tmp_path):
  p = tmp_path / "a_gt.h5"
  write_raw(p, np.zeros((2, 2)), np.zeros((2, 3)))
  with pytest.raises(H5LabelError, match=r"`fov` has shape \(2, 2\) but `sim` has \(2, 3\)"):
    read_gt_h5(str(p))
  p = tmp_path / "b_gt.h5"
  with h5py.File(p, "w") as f:
    f.create_dataset("fov", data=np.zeros((2, 2)))
  with pytest.raises(H5LabelError, match=r"b_gt\.h5: no dataset `sim`; the file has \['fov'\]"):
    read_gt_h5(str(p))
  p = tmp_path / "c_gt.h5"
  fov = np.zeros((3, 2))
  fov[2, 1] = np.nan
  write_raw(p, fov, np.zeros((3, 2)))
  with pytest.raises(H5LabelError, match=r"`fov` row 2 column 1 has value nan"):
    read_gt_h5(str(p), block_rows=2)
  p = tmp_path / "d_gt.h5"
  sim = np.zeros((3, 2))
  sim[1, 0] = 0.5
  write_raw(p, np.zeros((3, 2)), sim)
  with pytest.raises(H5LabelError, match=r"`sim` row 1 column 0 has value 0.5, expected 0 or 1"):
    read_gt_h5(str(p))
  p = tmp_path / "e_gt.h5"
  write_raw(p, np.zeros(3), np.zeros(3))
  with pytest.raises(H5LabelError, match=r"must be 2-D"):
    read_gt_h5(str(p))
  p = tmp_path / "f_gt.h5"
  p.write_text("not hdf5")
  with pytest.raises(H5LabelError, match=r"f_gt\.h5: not a readable HDF5 file"):
    read_gt_h5(str(p))
  with pytest.raises(FileNotFoundError, match="missing_gt.h5"):
    read_gt_h5(str(tmp_path / "missing_gt.h5"))


def test_reads_row_blocks_only(tmp_path, monkeypatch):
  """Every read of the datasets is a block of at most `block_rows` rows, never the whole matrix."""
  path = tmp_path / "x_gt.h5"
  write_raw(path, np.full((10, 5), 0.25), np.zeros((10, 5)))
  seen = []
  orig = h5py.Dataset.__getitem__

  def spy(self, key):
    out = orig(self, key)
    seen.append(np.shape(out))
    return out

  monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
  t = read_gt_h5(str(path), block_rows=3)
  assert t.num_pairs == 50
  assert seen and all(s[0] <= 3 for s in seen)


def test_feeds_the_pair_sampler(tmp_path):
  """A table read from an .h5 file trains like a computed one: labels equal the file's values."""
  from gcl_jax.data.pairs import CityPairs, sample_epoch
  q, d = street_city(80, 100, pano_every=10, seed=4)
  path = str(tmp_path / "c_gt.h5")
  write_gt_h5(path, city_pair_table(q, d))
  with h5py.File(path, "r") as f:
    fov, sim = f["fov"][...], f["sim"][...]
  city = CityPairs("c", q, d, read_gt_h5(path, len(q), len(d)))
  graded = sample_epoch([city], seed=0, epoch=0)
  assert len(graded) > 0
  np.testing.assert_array_equal(graded.label, fov[graded.query, graded.database])
  binary = sample_epoch([city], seed=0, epoch=0, binary=True)
  np.testing.assert_array_equal(binary.label, sim[binary.query, binary.database])

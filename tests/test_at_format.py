"""@-format reader: real corridor data (when present) and tiny trees built in tmp_path."""

import math

import numpy as np
import pytest

from gcl_jax.data import at_format
from gcl_jax.types import DatasetError


def _touch(directory, names):
  directory.mkdir(parents=True, exist_ok=True)
  for n in names:
    (directory / n).write_bytes(b"")


def test_corridor_counts_and_25m_positives(shared_dir):
  root = shared_dir / "data" / "corridor"
  if not root.is_dir():
    pytest.skip(f"{root} not present")
  q = at_format.read_at_format(str(root), "test", "queries")
  db = at_format.read_at_format(str(root), "test", "database")
  assert (len(q), len(db)) == (111, 111)
  # Pseudo-UTM: northing = 5,000,000 + 10 m x frame index, easting 500,000, heading 0.
  np.testing.assert_allclose(q.utm[:, 1], 5_000_000 + 10.0 * np.arange(111))
  np.testing.assert_allclose(db.utm[:, 0], 500_000.0)
  np.testing.assert_array_equal(q.heading, 0.0)
  dist = np.linalg.norm(q.utm[:, None] - db.utm[None], axis=-1)
  pos = dist <= 25.0
  i, j = np.indices(pos.shape)
  np.testing.assert_array_equal(pos, np.abs(i - j) <= 2)
  assert q.paths[0].startswith("images/test/queries/@") and "corridor_q000" in q.keys[0]
  assert (root / q.paths[5]).is_file()


def test_tiny_tree_fields_order_heading_nan(tmp_path):
  names = [at_format.format_name(500100.0, 4000200.5, zone="33", letter="T", heading=370.0),
           at_format.format_name(500000.0, 4000000.0, heading=None, note="night"),
           at_format.format_name(499999.5, 4000001.0, heading=12.5)]
  _touch(tmp_path / "images" / "val" / "database", names)
  _touch(tmp_path / "images" / "val" / "database" / "sub", [names[0].replace("500100", "600100")])
  (tmp_path / "images" / "val" / "database" / "notes.txt").write_text("ignored")
  t = at_format.read_at_format(str(tmp_path), "val", "database")
  order = sorted(names + ["sub/" + names[0].replace("500100", "600100")])
  assert list(t.paths) == [f"images/val/database/{n}" for n in order]
  by_key = {k: i for i, k in enumerate(t.keys)}
  i0 = by_key[names[0][:-4]]
  np.testing.assert_allclose(t.utm[i0], [500100.0, 4000200.5])
  assert t.heading[i0] == pytest.approx(10.0)  # 370 mod 360
  assert math.isnan(t.heading[by_key[names[1][:-4]]])
  assert t.heading[by_key[names[2][:-4]]] == pytest.approx(12.5)
  assert not t.pano.any() and not t.night.any() and t.in_all.all()
  # "query" is an alias of "queries".
  _touch(tmp_path / "images" / "val" / "queries", names[:1])
  assert len(at_format.read_at_format(str(tmp_path), "val", "query")) == 1


def test_utm_from_latlon_when_east_north_empty(tmp_path):
  from gcl_jax.labels.utm import latlon_to_utm
  name = "@@@@@52.5200@13.4050@@@90@@@@@@.jpg"
  _touch(tmp_path / "images" / "test" / "queries", [name])
  t = at_format.read_at_format(str(tmp_path), "test", "queries")
  e, n, _, _ = latlon_to_utm(np.array([52.52]), np.array([13.405]))
  np.testing.assert_allclose(t.utm[0], [e[0], n[0]])
  assert t.heading[0] == 90.0


@pytest.mark.parametrize("bad, match", [
    ("@1@2@3.jpg", "malformed @-format file name"),
    ("img_0001.jpg", "malformed @-format file name"),
    ("@abc@2@@@@@@@@@@@@@.jpg", "field `east` is not a number: 'abc'"),
    ("@1@2@@@@@@@north@@@@@@.jpg", "field `heading` is not a number"),
    ("@@2@@@@@@@@@@@@@.jpg", "empty UTM east/north"),
])
def test_malformed_name_is_named(tmp_path, bad, match):
  good = at_format.format_name(1.0, 2.0)
  _touch(tmp_path / "images" / "train" / "queries", [good, bad])
  with pytest.raises(DatasetError, match=match) as err:
    at_format.read_at_format(str(tmp_path), "train", "queries")
  assert bad in str(err.value)


def test_missing_folder_and_bad_args(tmp_path):
  with pytest.raises(DatasetError, match="images/test/database: directory not found"):
    at_format.read_at_format(str(tmp_path), "test", "database")
  (tmp_path / "images" / "test" / "database").mkdir(parents=True)
  with pytest.raises(DatasetError, match="no images"):
    at_format.read_at_format(str(tmp_path), "test", "database")
  with pytest.raises(ValueError, match="split"):
    at_format.read_at_format(str(tmp_path), "dev", "database")
  with pytest.raises(ValueError, match="side"):
    at_format.read_at_format(str(tmp_path), "test", "db")


def test_parse_name_roundtrip():
  name = at_format.format_name(1.5, 2.25, zone="10", letter="S", pano_id="abc", heading=45.0,
                               note="x")
  f = at_format.parse_name(name)
  assert (f["east"], f["north"], f["zone"], f["letter"], f["pano_id"], f["heading"], f["note"]) == (
      "1.50", "2.25", "10", "S", "abc", "45", "x")
  assert at_format.parse_metadata(name) == (1.5, 2.25, 45.0)

"""MSLS reader: bad input gets a DatasetError naming the file, the CSV line and the key or value."""

import os

import numpy as np
import pytest

from gcl_jax.data.msls import read_msls_city, read_msls_side
from gcl_jax.types import DatasetError

RAW_HEADER = ",key,lon,lat,ca,captured_at,pano"
POST_HEADER = ",key,easting,northing,unique_cluster,control_panel,night,view_direction"


def raw_row(i, key, ca="90.0", pano="False"):
  return f"{i},{key},12.5,55.6,{ca},1500000000000,{pano}"


def post_row(i, key, east="720000.5", north="6170000.25", night="False"):
  return f"{i},{key},{east},{north},0,0,{night},Forward"


def write_side(root, side, raw_rows, post_rows, city="cph", sub_rows=None):
  base = os.path.join(root, "train_val", city, side)
  os.makedirs(base, exist_ok=True)
  with open(os.path.join(base, "raw.csv"), "w") as f:
    f.write("\n".join([RAW_HEADER, *raw_rows]) + "\n")
  with open(os.path.join(base, "postprocessed.csv"), "w") as f:
    f.write("\n".join([POST_HEADER, *post_rows]) + "\n")
  if sub_rows is not None:
    with open(os.path.join(base, "subtask_index.csv"), "w") as f:
      f.write("\n".join([",key,all,s2w,w2s,o2n,n2o,d2n,n2d", *sub_rows]) + "\n")
  return base


def good(n=3):
  keys = [f"k{i}" for i in range(n)]
  return keys, [raw_row(i, k, ca=str(10.0 * i)) for i, k in enumerate(keys)], [
      post_row(i, k, east=str(720000.0 + i)) for i, k in enumerate(keys)]


def test_valid_city(tmp_path):
  keys, raw, post = good()
  write_side(tmp_path, "query", raw, post)
  write_side(tmp_path, "database", raw[:2] + [raw_row(2, "k2", ca="", pano="True")], post)
  q, d = read_msls_city(str(tmp_path), "cph")
  assert list(q.keys) == keys and q.paths[1] == "train_val/cph/query/images/k1.jpg"
  np.testing.assert_array_equal(q.heading, [0.0, 10.0, 20.0])
  np.testing.assert_array_equal(q.utm[:, 0], [720000.0, 720001.0, 720002.0])
  assert not q.pano.any() and q.in_all.all()
  # A panorama may have an empty compass angle: its heading is NaN.
  assert d.pano.tolist() == [False, False, True] and np.isnan(d.heading[2])


def test_heading_wraps_and_pano_heading_is_nan(tmp_path):
  _, raw, post = good(2)
  raw = [raw_row(0, "k0", ca="-90"), raw_row(1, "k1", ca="400", pano="True")]
  write_side(tmp_path, "query", raw, post)
  t = read_msls_side(str(tmp_path), "cph", "query")
  assert t.heading[0] == 270.0 and np.isnan(t.heading[1])


@pytest.mark.parametrize("ca", ["", "nan", "NaN"])
def test_missing_heading(tmp_path, ca):
  _, raw, post = good()
  raw[1] = raw_row(1, "k1", ca=ca)
  base = write_side(tmp_path, "query", raw, post)
  with pytest.raises(DatasetError) as e:
    read_msls_side(str(tmp_path), "cph", "query")
  msg = str(e.value)
  assert f"{base}/raw.csv:3" in msg and "'k1'" in msg and "`ca`" in msg


def test_non_numeric_heading(tmp_path):
  _, raw, post = good()
  raw[2] = raw_row(2, "k2", ca="north-east")
  base = write_side(tmp_path, "query", raw, post)
  with pytest.raises(DatasetError, match=rf"{base}/raw\.csv:4: column `ca` is not a number: "
                                         r"'north-east'"):
    read_msls_side(str(tmp_path), "cph", "query")


@pytest.mark.parametrize("column,value", [("easting", "nan"), ("northing", "inf"),
                                          ("easting", ""), ("northing", "abc")])
def test_bad_coordinates(tmp_path, column, value):
  _, raw, post = good()
  post[0] = post_row(0, "k0", **{{"easting": "east", "northing": "north"}[column]: value})
  base = write_side(tmp_path, "query", raw, post)
  with pytest.raises(DatasetError,
                     match=rf"{base}/postprocessed\.csv:2: column `{column}` is not "):
    read_msls_side(str(tmp_path), "cph", "query")


def test_key_mismatch_between_raw_and_postprocessed(tmp_path):
  _, raw, post = good()
  post[1] = post_row(1, "other")
  base = write_side(tmp_path, "database", raw, post)
  with pytest.raises(DatasetError, match=rf"{base}/postprocessed\.csv:3: key 'other' does not "
                                         rf"match {base}/raw\.csv:3 key 'k1'"):
    read_msls_side(str(tmp_path), "cph", "database")


def test_key_order_mismatch(tmp_path):
  _, raw, post = good()
  post[0], post[1] = post[1], post[0]
  base = write_side(tmp_path, "query", raw, post)
  with pytest.raises(DatasetError, match=rf"postprocessed\.csv:2: key 'k1' does not match"):
    read_msls_side(str(tmp_path), "cph", "query")


def test_row_count_mismatch(tmp_path):
  _, raw, post = good()
  base = write_side(tmp_path, "query", raw, post[:2])
  with pytest.raises(DatasetError, match=rf"{base}/postprocessed\.csv: 2 rows but "
                                         rf"{base}/raw\.csv has 3"):
    read_msls_side(str(tmp_path), "cph", "query")


def test_subtask_key_mismatch(tmp_path):
  _, raw, post = good()
  sub = [f"{i},{k},True,False,False,False,False,False,False" for i, k in
         enumerate(["k0", "k1", "zz"])]
  base = write_side(tmp_path, "query", raw, post, sub_rows=sub)
  with pytest.raises(DatasetError, match=rf"{base}/subtask_index\.csv:4: key 'zz'"):
    read_msls_side(str(tmp_path), "cph", "query")


def test_bad_pano_and_night_flags(tmp_path):
  _, raw, post = good()
  raw[0] = raw_row(0, "k0", pano="maybe")
  base = write_side(tmp_path, "query", raw, post)
  with pytest.raises(DatasetError, match=rf"{base}/raw\.csv:2: column `pano` is not a boolean: "
                                         r"'maybe'"):
    read_msls_side(str(tmp_path), "cph", "query")


def test_duplicate_keys(tmp_path):
  _, raw, post = good()
  raw[2] = raw_row(2, "k0")
  post[2] = post_row(2, "k0")
  base = write_side(tmp_path, "query", raw, post)
  with pytest.raises(DatasetError, match=rf"{base}/raw\.csv: duplicated keys \['k0'\]"):
    read_msls_side(str(tmp_path), "cph", "query")


def test_structural_errors(tmp_path):
  _, raw, post = good()
  base = write_side(tmp_path, "query", raw, post)
  with open(os.path.join(base, "raw.csv"), "a") as f:
    f.write("9,k9,1.0\n")
  with pytest.raises(DatasetError, match=rf"{base}/raw\.csv:5: 3 fields, header has 7"):
    read_msls_side(str(tmp_path), "cph", "query")
  with open(os.path.join(base, "raw.csv"), "w") as f:
    f.write(",key,lon,lat,captured_at,pano\n")
  with pytest.raises(DatasetError, match=r"raw\.csv: missing column\(s\) \['ca'\]"):
    read_msls_side(str(tmp_path), "cph", "query")
  os.remove(os.path.join(base, "postprocessed.csv"))
  write_side(tmp_path, "query", raw, post)
  os.remove(os.path.join(base, "postprocessed.csv"))
  with pytest.raises(DatasetError, match=rf"{base}/postprocessed\.csv: file not found"):
    read_msls_side(str(tmp_path), "cph", "query")
  with pytest.raises(DatasetError, match=r"train_val/nowhere/query: directory not found"):
    read_msls_side(str(tmp_path), "nowhere", "query")
  write_side(tmp_path, "query", [], [])
  with pytest.raises(DatasetError, match=r"raw\.csv: no images"):
    read_msls_side(str(tmp_path), "cph", "query")

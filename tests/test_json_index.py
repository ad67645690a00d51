"""The authors' JSON index files: G5 parity with upstream create_json_idx.py, loc/poses reading."""

import json
import math

import numpy as np
import pytest

from gcl_jax.data import json_index, msls, msls_test_cities
from gcl_jax.types import DatasetError
from gcl_jax.data.sevenscenes import matrix_from_pose7

TOY = "json_index/toy_msls"


@pytest.mark.parametrize("city", ["cph", "sf"])
@pytest.mark.parametrize("side", ["query", "database"])
def test_g5_msls_index_equals_upstream(data_dir, tmp_path, city, side):
  root = str(data_dir / TOY)
  out = tmp_path / f"{city}_{side}.json"
  written = json_index.write_msls_json_index(root, city, side, str(out))
  golden = json.loads((data_dir / TOY / "train_val" / city / f"{side}.json").read_text())
  reread = json.loads(out.read_text())
  for d in (written, reread):
    assert d["im_paths"] == golden["im_paths"]
    assert d["loc"] == golden["loc"]
  if (city, side) == ("cph", "query"):
    assert reread["loc"][0] == [0.0, 0.0, 90.0]
    assert reread["loc"][2] == [0.0, 0.0, 0.0]  # panorama keeps raw.csv ca, as upstream


def test_read_loc_index_matches_msls_reader(data_dir):
  root = str(data_dir / TOY)
  t = json_index.read_json_index(str(data_dir / TOY / "train_val/cph/database.json"), root)
  ref = msls.read_msls_side(root, "cph", "database")
  np.testing.assert_array_equal(t.paths, ref.paths)
  np.testing.assert_array_equal(t.keys, ref.keys)
  np.testing.assert_array_equal(t.utm, ref.utm)
  assert t.name == "database" and t.root == root
  np.testing.assert_array_equal(t.heading, [0, 0, 0, 0, 0])


def test_roundtrip_nan_heading_as_null(tmp_path, data_dir):
  root = str(data_dir / TOY)
  q = msls.read_msls_side(root, "cph", "query")  # q2 is a panorama: heading NaN
  path = tmp_path / "sub" / "q.json"
  d = json_index.write_json_index(q, str(path))
  assert d["loc"][2][2] is None and d["im_prefix"] == root + "/"
  assert "NaN" not in path.read_text()
  t = json_index.read_json_index(str(path), root)
  np.testing.assert_array_equal(t.utm, q.utm)
  np.testing.assert_array_equal(t.heading, q.heading)  # NaN == NaN for assert_array_equal


def test_poses_index_roundtrip(tmp_path):
  rng = np.random.default_rng(1)
  q = rng.normal(size=(4, 4))
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  p7 = np.concatenate([rng.normal(size=(4, 3)), q], 1)
  path = tmp_path / "train.json"
  path.write_text(json.dumps({"im_prefix": "x/", "im_paths": [f"seq-01/frame-{i:06d}.color.png"
                                                               for i in range(4)],
                              "poses": p7.tolist()}))
  t = json_index.read_json_index(str(path), "/data/stairs")
  m = matrix_from_pose7(p7)
  np.testing.assert_allclose(t.utm, p7[:, :2])
  d = m[:, :3, 2]
  np.testing.assert_allclose(t.heading, np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360)
  assert list(t.keys) == [f"frame-{i:06d}.color" for i in range(4)]
  np.testing.assert_allclose(json_index.read_json_poses(str(path)), m)
  out = tmp_path / "again.json"
  json_index.write_json_index(t, str(out), poses=m)
  np.testing.assert_allclose(json_index.read_json_poses(str(out)), m, atol=1e-12)


@pytest.mark.parametrize("content, match", [
    ("{", "not valid JSON"),
    ('{"loc": []}', "missing key `im_paths`"),
    ('{"im_paths": ["a.jpg"]}', "neither `loc` nor `poses`"),
    ('{"im_paths": ["a.jpg", "b.jpg"], "loc": [[1, 2, 3]]}', "`loc` has 1 rows, `im_paths` has 2"),
    ('{"im_paths": ["a.jpg"], "loc": [[1, 2]]}', r"`loc`\[0\] must be a list of 3 numbers"),
    ('{"im_paths": ["a.jpg"], "loc": [[1, "x", 3]]}', r"`loc`\[0\]\[1\] is not a number: 'x'"),
    ('{"im_paths": ["a.jpg"], "poses": [[1, 2, 3]]}', r"`poses`\[0\] must be a list of 7"),
])
def test_malformed_index_named(tmp_path, content, match):
  path = tmp_path / "bad.json"
  path.write_text(content)
  with pytest.raises(DatasetError, match=match) as err:
    json_index.read_json_index(str(path), str(tmp_path))
  assert "bad.json" in str(err.value)


def _write_test_city(root, keys, all_flags, sub_keys=None):
  base = root / "test" / "miami" / "query"
  base.mkdir(parents=True)
  (base / "seq_info.csv").write_text(",key,sequence_key,frame_number\n" + "".join(
      f"{i},{k},s{i},0\n" for i, k in enumerate(keys)))
  sub_keys = keys if sub_keys is None else sub_keys
  (base / "subtask_index.csv").write_text(",key,all,s2w,w2s,o2n,n2o,d2n,n2d\n" + "".join(
      f"{i},{k},{a},False,False,False,False,False,False\n"
      for i, (k, a) in enumerate(zip(sub_keys, all_flags))))
  return base


def test_msls_test_city_has_nan_positions(tmp_path):
  _write_test_city(tmp_path, ["k2", "k0", "k1"], ["True", "False", "True"],
                   sub_keys=["k1", "k2", "k0"])
  t = msls_test_cities.read_msls_test_side(str(tmp_path), "miami", "query")
  assert list(t.keys) == ["k2", "k0", "k1"]  # seq_info.csv order
  assert list(t.in_all) == [False, True, True]  # subtask flags matched by key
  assert list(t.paths) == [f"test/miami/query/images/{k}.jpg" for k in ("k2", "k0", "k1")]
  assert np.isnan(t.utm).all() and np.isnan(t.heading).all() and t.name == "test/miami/query"
  order = tmp_path / "q.json"
  order.write_text(json.dumps({"im_paths": [f"test/miami/query/images/{k}.jpg"
                                            for k in ("k0", "k1", "k2")]}))
  t2 = msls_test_cities.read_msls_test_side(str(tmp_path), "miami", "query", order_json=str(order))
  assert list(t2.keys) == ["k0", "k1", "k2"] and list(t2.in_all) == [True, True, False]


def test_msls_test_city_key_mismatch(tmp_path):
  _write_test_city(tmp_path, ["a", "b"], ["True", "True"], sub_keys=["a", "c"])
  with pytest.raises(DatasetError, match="subtask_index.csv: keys differ"):
    msls_test_cities.read_msls_test_side(str(tmp_path), "miami", "query")


def test_any_city_dispatch(data_dir):
  q, db = msls_test_cities.read_msls_any_city(str(data_dir / TOY), "cph")
  assert (len(q), len(db)) == (5, 5) and math.isnan(q.heading[2])

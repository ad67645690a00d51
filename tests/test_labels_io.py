"""Label files (save/load of PairTable) and the per-city label cache."""

import dataclasses
import json
import os

import numpy as np
import pytest

from gcl_jax.types import ImageTable
from gcl_jax.labels import (PairTable, city_pair_table, label_city_cached, load_pair_table,
                            save_pair_table)
from gcl_jax.labels import io as label_io


def image_table(n, seed, name):
  rng = np.random.default_rng(seed)
  pano = rng.random(n) < 0.1
  return ImageTable(root="/r", name=name, paths=np.array([f"{name}/{i}.jpg" for i in range(n)]),
                    keys=np.array([f"{name}{i}" for i in range(n)]),
                    utm=rng.uniform(0, 200, (n, 2)) + [4e5, 5.8e6],
                    heading=np.where(pano, np.nan, rng.uniform(0, 360, n)), pano=pano,
                    night=np.zeros(n, bool), in_all=np.ones(n, bool))


@pytest.fixture
def city():
  return image_table(40, 0, "q"), image_table(60, 1, "d")


def assert_tables_equal(a: PairTable, b: PairTable):
  assert (a.num_queries, a.num_database) == (b.num_queries, b.num_database)
  for f in ("indptr", "db_idx", "psi", "sim", "dist"):
    x, y = getattr(a, f), getattr(b, f)
    assert x.dtype == y.dtype, f
    np.testing.assert_array_equal(x, y, err_msg=f)
  assert a.params == b.params


# ------------------------------------------------------------------------------ save / load


def test_round_trip(tmp_path, city):
  table = city_pair_table(*city)
  assert table.num_pairs > 50
  path = tmp_path / "sub" / "labels.npz"  # the directory is created
  save_pair_table(str(path), table)
  assert_tables_equal(load_pair_table(str(path)), table)
  assert os.listdir(tmp_path / "sub") == ["labels.npz"]  # no temporary file left behind
  # The documented layout, readable without this package.
  with np.load(path, allow_pickle=False) as z:
    assert str(z["format"]) == "gcl_jax.PairTable" and int(z["format_version"]) == 1
    assert json.loads(str(z["params_json"])) == table.params
    assert z["psi"].dtype == np.float32 and z["indptr"].dtype == np.int64


def test_round_trip_empty_and_overwrite(tmp_path, city):
  empty = PairTable(3, 0, np.zeros(4, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                    np.zeros(0, np.int8), np.zeros(0, np.float32), {"a": 1})
  path = str(tmp_path / "t.npz")
  save_pair_table(path, empty)
  assert_tables_equal(load_pair_table(path), empty)
  full = city_pair_table(*city)
  save_pair_table(path, full)  # atomically replaces the old file
  assert_tables_equal(load_pair_table(path), full)
  assert os.listdir(tmp_path) == ["t.npz"]


def test_save_rejects_unserialisable_params(tmp_path, city):
  table = dataclasses.replace(city_pair_table(*city), params={"f": object()})
  with pytest.raises(TypeError, match="JSON"):
    save_pair_table(str(tmp_path / "t.npz"), table)
  assert os.listdir(tmp_path) == []


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, city, monkeypatch):
  table = city_pair_table(*city)
  path = str(tmp_path / "t.npz")
  save_pair_table(path, table)

  def boom(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(label_io.np, "savez", boom)
  with pytest.raises(OSError, match="disk full"):
    save_pair_table(path, table)
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ["t.npz"]
  assert_tables_equal(load_pair_table(path), table)


def test_load_missing_file(tmp_path):
  path = str(tmp_path / "nope.npz")
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    load_pair_table(path)


def test_load_corrupt_file(tmp_path, city):
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"this is not a zip archive" * 10)
  with pytest.raises(label_io.LabelFileError, match="garbage.npz"):
    load_pair_table(str(garbage))
  good = tmp_path / "good.npz"
  save_pair_table(str(good), city_pair_table(*city))
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
  with pytest.raises(label_io.LabelFileError, match="truncated.npz"):
    load_pair_table(str(truncated))


def write_npz(path, table, drop=(), **override):
  fields = dict(format=np.array("gcl_jax.PairTable"), format_version=np.array(1, np.int64),
                num_queries=np.array(table.num_queries, np.int64),
                num_database=np.array(table.num_database, np.int64),
                params_json=np.array(json.dumps(table.params)), indptr=table.indptr,
                db_idx=table.db_idx, psi=table.psi, sim=table.sim, dist=table.dist)
  fields.update(override)
  for k in drop:
    del fields[k]
  np.savez(path, **fields)


@pytest.mark.parametrize("drop, override, match", [
    (("psi",), {}, r"missing key\(s\) \['psi'\]"),
    (("params_json", "indptr"), {}, "missing key"),
    ((), {"format_version": np.array(7, np.int64)}, "format_version 7"),
    ((), {"format": np.array("something else")}, "format 'something else'"),
    ((), {"params_json": np.array("{not json")}, "params_json"),
    ((), {"psi": np.zeros(3, np.float64)}, "dtype float64"),
    ((), {"sim": np.zeros(2, np.int8)}, "inconsistent arrays"),
    ((), {"db_idx": None}, "db_idx outside"),
])
def test_load_malformed_contents(tmp_path, city, drop, override, match):
  table = city_pair_table(*city)
  if "db_idx" in override:
    override = {"db_idx": table.db_idx + table.num_database}
  path = tmp_path / "bad.npz"
  write_npz(path, table, drop, **override)
  with pytest.raises(label_io.LabelFileError, match=match):
    load_pair_table(str(path))


# ------------------------------------------------------------------------------ city cache


def cache_files(out_dir, city_name="cph"):
  return out_dir / f"{city_name}_fov.npz", out_dir / f"{city_name}_fov.manifest.json"


def forbid_recompute(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("labels were recomputed although the cache matches")

  monkeypatch.setattr(label_io, "city_pair_table", fail)


def count_recomputes(monkeypatch):
  calls = []
  real = city_pair_table

  def counting(query, database, **params):
    calls.append(params)
    return real(query, database, **params)

  monkeypatch.setattr(label_io, "city_pair_table", counting)
  return calls


def test_cache_writes_files_and_reuses(tmp_path, city, monkeypatch):
  query, database = city
  table = label_city_cached(query, database, str(tmp_path), "cph", fov_deg=100.0)
  assert_tables_equal(table, city_pair_table(query, database, fov_deg=100.0))
  npz, manifest_path = cache_files(tmp_path)
  assert sorted(os.listdir(tmp_path)) == sorted([npz.name, manifest_path.name])
  manifest = json.loads(manifest_path.read_text())
  assert manifest["params"] == table.params and manifest["params"]["fov_deg"] == 100.0
  assert manifest["inputs_sha256"] == label_io.inputs_sha256(query, database)
  assert len(manifest["inputs_sha256"]) == 64
  assert (manifest["num_queries"], manifest["num_database"], manifest["num_pairs"]) == (
      40, 60, table.num_pairs)
  assert manifest["label_file"] == npz.name and manifest["city"] == "cph"
  mtime = npz.stat().st_mtime_ns

  calls = count_recomputes(monkeypatch)
  again = label_city_cached(query, database, str(tmp_path), "cph", fov_deg=100.0)
  assert calls == [] and npz.stat().st_mtime_ns == mtime
  assert_tables_equal(again, table)
  # Defaults spelled out explicitly are the same parameters.
  label_city_cached(query, database, str(tmp_path), "cph", fov_deg=100, radius_m=50.0,
                    normalization="ratio")
  assert calls == []


def modified(table: ImageTable, field: str) -> ImageTable:
  if field == "utm":
    utm = table.utm.copy()
    utm[3, 0] += 0.01
    return dataclasses.replace(table, utm=utm)
  if field == "heading":
    i = int(np.flatnonzero(~table.pano)[0])
    heading = table.heading.copy()
    heading[i] += 1.0
    return dataclasses.replace(table, heading=heading)
  if field == "pano":
    i = int(np.flatnonzero(~table.pano)[0])
    pano, heading = table.pano.copy(), table.heading.copy()
    pano[i], heading[i] = True, np.nan
    return dataclasses.replace(table, pano=pano, heading=heading)
  if field == "keys":
    keys = table.keys.copy()
    keys[0] = "renamed"
    return dataclasses.replace(table, keys=keys)
  raise ValueError(field)


@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("field", ["utm", "heading", "pano", "keys"])
def test_cache_recomputes_when_inputs_change(tmp_path, city, monkeypatch, side, field):
  label_city_cached(*city, str(tmp_path), "cph")
  changed = list(city)
  changed[side] = modified(changed[side], field)
  calls = count_recomputes(monkeypatch)
  table = label_city_cached(*changed, str(tmp_path), "cph")
  assert len(calls) == 1
  assert_tables_equal(table, city_pair_table(*changed))
  manifest = json.loads(cache_files(tmp_path)[1].read_text())
  assert manifest["inputs_sha256"] == label_io.inputs_sha256(*changed)
  label_city_cached(*changed, str(tmp_path), "cph")  # and now it is reused
  assert len(calls) == 1


def test_cache_recomputes_when_params_change(tmp_path, city, monkeypatch):
  label_city_cached(*city, str(tmp_path), "cph")
  calls = count_recomputes(monkeypatch)
  for params in ({"radius_m": 40.0}, {"fov_deg": 60.0}, {"normalization": "iou"},
                 {"cutoff_factor": 1.0}, {"pos_dist_m": 5.0}, {"neg_dist_m": 30.0}):
    table = label_city_cached(*city, str(tmp_path), "cph", **params)
    assert_tables_equal(table, city_pair_table(*city, **params))
  assert len(calls) == 6
  # Another city name is another cache entry.
  label_city_cached(*city, str(tmp_path), "sf")
  assert len(calls) == 7 and cache_files(tmp_path, "sf")[0].exists()


def test_cache_recomputes_after_damage(tmp_path, city, monkeypatch):
  npz, manifest = cache_files(tmp_path)
  reference = label_city_cached(*city, str(tmp_path), "cph")
  calls = count_recomputes(monkeypatch)
  npz.write_bytes(b"corrupt")
  assert_tables_equal(label_city_cached(*city, str(tmp_path), "cph"), reference)
  npz.unlink()
  assert_tables_equal(label_city_cached(*city, str(tmp_path), "cph"), reference)
  manifest.unlink()
  assert_tables_equal(label_city_cached(*city, str(tmp_path), "cph"), reference)
  manifest.write_text("{ not json")
  assert_tables_equal(label_city_cached(*city, str(tmp_path), "cph"), reference)
  assert len(calls) == 4
  # A label file computed with other parameters behind a matching manifest is not trusted.
  save_pair_table(str(npz), city_pair_table(*city, fov_deg=30.0))
  assert_tables_equal(label_city_cached(*city, str(tmp_path), "cph"), reference)
  assert len(calls) == 5
  forbid_recompute(monkeypatch)
  assert_tables_equal(label_city_cached(*city, str(tmp_path), "cph"), reference)


def test_cache_argument_errors(tmp_path, city):
  with pytest.raises(TypeError, match="radius"):
    label_city_cached(*city, str(tmp_path), "cph", radius=50.0)
  with pytest.raises(ValueError, match="fov_deg"):
    label_city_cached(*city, str(tmp_path), "cph", fov_deg=0.0)
  with pytest.raises(ValueError, match="city"):
    label_city_cached(*city, str(tmp_path), "../cph")
  assert os.listdir(tmp_path) == []


def test_inputs_hash_is_stable_and_sensitive(city):
  query, database = city
  h = label_io.inputs_sha256(query, database)
  assert h == label_io.inputs_sha256(dataclasses.replace(query), dataclasses.replace(database))
  assert h != label_io.inputs_sha256(database, query)
  # Fields that do not affect the labels do not change the hash.
  assert h == label_io.inputs_sha256(dataclasses.replace(query, night=~query.night), database)

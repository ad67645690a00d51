"""Tests of the synthetic street world (gcl_jax/synthetic)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import time

import numpy as np
import pytest
from PIL import Image

from gcl_jax import synthetic as S
from gcl_jax.data import msls
from gcl_jax.evaluation.baselines import thumbnail_descriptors
from gcl_jax.evaluation.protocols import CityEval, evaluate_retrieval, msls_ground_truth
from gcl_jax.synthetic import write as synthetic_write

# A tiny world: one training and one validation city, ~100 small images, renders in ~1 s.
TINY = dict(train_cities=["tiny_train"], val_cities=["tiny_val"], image_height=24,
            image_width=36, streets_per_axis=[2, 2], block_size_m=[30.0, 34.0],
            frame_spacing_m=6.0, query_sequences=3, train_query_sequences=3,
            panorama_fraction=0.05)
HEADERS = {
    "raw.csv": ",key,lon,lat,ca,captured_at,pano",
    "postprocessed.csv": ",key,easting,northing,unique_cluster,control_panel,night,view_direction",
    "seq_info.csv": ",key,sequence_key,frame_number",
    "subtask_index.csv": ",key,all,s2w,w2s,o2n,n2o,d2n,n2d",
}
SIDES = ("query", "database")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> tuple[pathlib.Path, S.WorldConfig]:
  root = tmp_path_factory.mktemp("synthetic") / "world"
  config = S.WorldConfig(**TINY)
  S.generate_world(str(root), config, progress=False)
  return root, config


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
  with open(path, newline="") as fh:
    return list(csv.DictReader(fh))


def tree_digest(root: pathlib.Path) -> dict[str, str]:
  """sha256 of every CSV and image under train_val/."""
  out = {}
  for p in sorted((root / "train_val").rglob("*")):
    if p.is_file():
      out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
  return out


# ---- config ------------------------------------------------------------------------------------


def test_config_from_plain_dict_normalizes_lists():
  c = S.WorldConfig(**TINY, database_conditions={"night": 1.0, "fog": 2})
  assert c.train_cities == ("tiny_train",) and c.streets_per_axis == (2, 2)
  assert c.database_conditions == (("night", 1.0), ("fog", 2.0))
  assert S.WorldConfig(**json.loads(json.dumps(dataclasses.asdict(c)))) == c


def test_config_rejects_unknown_key_and_bad_values():
  with pytest.raises(TypeError, match="no_such_key"):
    S.WorldConfig(no_such_key=1)
  with pytest.raises(ValueError, match="real MSLS city"):
    S.WorldConfig(val_cities=("cph",))
  with pytest.raises(ValueError, match="unknown condition 'rain'"):
    S.WorldConfig(query_conditions=(("rain", 1.0),))
  with pytest.raises(ValueError, match="duplicated"):
    S.WorldConfig(train_cities=("a_city",), val_cities=("a_city",))
  with pytest.raises(ValueError, match="image_height"):
    S.WorldConfig(image_height=0)


def test_config_rejects_every_msls_city_name():
  for city in msls.TRAIN_CITIES + msls.VAL_CITIES + msls.TEST_CITIES:
    with pytest.raises(ValueError, match="real MSLS city"):
      S.WorldConfig(train_cities=(city.upper(),), val_cities=())


# ---- the written world -----------------------------------------------------------------------


def test_world_loads_with_msls_reader(tiny_world):
  root, config = tiny_world
  for city in config.train_cities + config.val_cities:
    q, db = msls.read_msls_city(str(root), city)
    assert len(q) > 5 and len(db) > 20
    msls.check_images_exist(q)
    msls.check_images_exist(db)
    assert db.pano.any() and not q.pano.any()  # panorama_fraction > 0: a few panoramas
    assert np.isnan(db.heading[db.pano]).all()
    # Every query has a non-panoramic database image within 25 m.
    d = np.linalg.norm(q.utm[:, None] - db.utm[None, ~db.pano], axis=-1)
    assert (d.min(1) < 25.0).all()


def test_csv_formats_and_rows(tiny_world):
  root, config = tiny_world
  all_keys = []
  for city in config.train_cities + config.val_cities:
    for side in SIDES:
      base = root / "train_val" / city / side
      rows = {}
      for name, header in HEADERS.items():
        text = (base / name).read_text()
        assert text.splitlines()[0] == header, (base / name)
        rows[name] = read_rows(base / name)
        assert [r[""] for r in rows[name]] == [str(i) for i in range(len(rows[name]))]
      keys = [r["key"] for r in rows["raw.csv"]]
      for name in HEADERS:
        assert [r["key"] for r in rows[name]] == keys
      images = sorted(p.stem for p in (base / "images").iterdir())
      assert images == sorted(keys)  # One image per row, no strays.
      all_keys += keys
      assert all(len(k) == 22 and k.isalnum() for k in keys)
      ca = np.array([float(r["ca"]) for r in rows["raw.csv"]])
      assert ((ca >= 0) & (ca < 360)).all()
      lat = np.array([float(r["lat"]) for r in rows["raw.csv"]])
      lon = np.array([float(r["lon"]) for r in rows["raw.csv"]])
      assert (np.abs(lat - 49.6) < 1.0).all() and (np.abs(lon - 9.0) < 1.0).all()  # zone 32N
      for r in rows["raw.csv"]:
        assert r["pano"] in ("True", "False")
      post = rows["postprocessed.csv"]
      assert {r["view_direction"] for r in post} <= {"Forward", "Backward", "Sideways"}
      assert all(r["night"] in ("True", "False") for r in post)
      for r in rows["subtask_index.csv"]:
        assert r["all"] == "True"
        assert all(r[c] in ("True", "False") for c in ("s2w", "w2s", "o2n", "n2o", "d2n", "n2d"))
      frames = {}
      for r in rows["seq_info.csv"]:
        frames.setdefault(r["sequence_key"], []).append(int(r["frame_number"]))
      assert all(f == list(range(len(f))) for f in frames.values())
  assert len(set(all_keys)) == len(all_keys)


def test_images_decode_with_configured_size(tiny_world):
  root, config = tiny_world
  paths = sorted((root / "train_val").rglob("*.jpg"))
  assert paths
  for p in paths:
    with Image.open(p) as im:
      assert im.format == "JPEG" and im.mode == "RGB"
      assert im.size == (config.image_width, config.image_height)


def test_world_json_is_written(tiny_world):
  root, config = tiny_world
  meta = json.loads((root / "world.json").read_text())
  assert meta["config"] == config.to_json_dict()
  for city in config.train_cities + config.val_cities:
    n = {s: len(read_rows(root / "train_val" / city / s / "raw.csv")) for s in SIDES}
    assert meta["cities"][city]["query"] == n["query"]
    assert meta["cities"][city]["database"] == n["database"]
  assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_generation_is_deterministic(tiny_world, tmp_path):
  root, config = tiny_world
  other = tmp_path / "again"
  S.generate_world(str(other), config, progress=False)
  assert tree_digest(other) == tree_digest(root)


def test_reuse_and_regeneration(tmp_path, monkeypatch):
  root = tmp_path / "w"
  config = S.WorldConfig(**{**TINY, "val_cities": []})
  calls = []
  real = synthetic_write._generate_city
  monkeypatch.setattr(synthetic_write, "_generate_city",
                      lambda *a, **k: calls.append(a[1]) or real(*a, **k))
  S.generate_world(str(root), config, progress=False)
  assert calls == ["tiny_train"]
  first = tree_digest(root)
  mtime = (root / "world.json").stat().st_mtime_ns
  S.generate_world(str(root), config, progress=False)  # Same config: reused.
  assert calls == ["tiny_train"] and (root / "world.json").stat().st_mtime_ns == mtime
  changed = dataclasses.replace(config, seed=1)
  S.generate_world(str(root), changed, progress=False)  # New config: regenerated in place.
  assert calls == ["tiny_train"] * 2
  assert json.loads((root / "world.json").read_text())["config"]["seed"] == 1
  assert tree_digest(root) != first
  assert not [p for p in tmp_path.iterdir() if p.name != "w"]


def test_interrupted_generation_leaves_no_world(tmp_path, monkeypatch):
  root = tmp_path / "w"
  config = S.WorldConfig(**TINY)

  def boom(*args, **kwargs):
    raise KeyboardInterrupt

  real = synthetic_write._generate_city
  calls = []

  def second_city_fails(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs) if len(calls) == 1 else boom()

  monkeypatch.setattr(synthetic_write, "_generate_city", second_city_fails)
  with pytest.raises(KeyboardInterrupt):
    S.generate_world(str(root), config, progress=False)
  assert not root.exists()
  assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_foreign_directory(tmp_path):
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "precious.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="not a synthetic world"):
    S.generate_world(str(tmp_path / "w"), S.WorldConfig(**TINY), progress=False)
  assert (tmp_path / "w" / "precious.txt").read_text() == "keep me"


def test_a_finished_world_of_another_generator_is_kept(tmp_path):
  """Two generators of one world: the second to finish discards its copy, nothing else moves."""
  root = tmp_path / "w"
  config = S.WorldConfig(**{**TINY, "val_cities": []})
  S.generate_world(str(root), config, progress=False)
  first = tree_digest(root)
  mtime = (root / "world.json").stat().st_mtime_ns
  late = tmp_path / ".w.tmp-late"
  (late / "train_val").mkdir(parents=True)
  want = {"format_version": S.FORMAT_VERSION, "config": config.to_json_dict()}
  synthetic_write._install(str(late), str(root), want)
  assert not late.exists()
  assert tree_digest(root) == first and (root / "world.json").stat().st_mtime_ns == mtime
  assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_leftovers_of_dead_generators_are_removed(tmp_path):
  """.old-* siblings and .tmp-* siblings unchanged for a day go; a live .tmp-* stays."""
  dead, old, live = (tmp_path / n for n in (".w.tmp-dead", ".w.old-1234", ".w.tmp-live"))
  for d in (dead, old, live):
    (d / "train_val").mkdir(parents=True)
  day_ago = time.time() - 2 * 24 * 3600
  for d in (dead / "train_val", dead):
    os.utime(d, (day_ago, day_ago))
  S.generate_world(str(tmp_path / "w"), S.WorldConfig(**{**TINY, "val_cities": []}),
                   progress=False)
  assert sorted(p.name for p in tmp_path.iterdir()) == [".w.tmp-live", "w"]


# ---- rendering -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def city() -> S.City:
  return S.build_city(S.WorldConfig(streets_per_axis=(3, 3)), "render_city")


def gray(img: np.ndarray) -> np.ndarray:
  g = img.astype(np.float64).mean(-1)
  g -= g.mean()
  return g / (np.linalg.norm(g) + 1e-9)


def test_same_pose_same_condition_renders_identically(city):
  st = city.streets[0]
  x, y = st.point(st.start + 20.0, 1.5)
  cond = S.make_condition("sunny", 3)
  tr = S.make_transients(city, st, 1.5, 1.0, np.random.default_rng(0))
  a = S.render_view(city, S.Camera(x, y, st.heading), cond, 48, 72, transients=tr, seed=5)
  b = S.render_view(city, S.Camera(x, y, st.heading), cond, 48, 72, transients=tr, seed=5)
  assert a.shape == (48, 72, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  pano = S.render_view(city, S.Camera(x, y, 0.0, panorama=True), cond, 48, 72)
  assert pano.shape == (48, 72, 3) and pano.std() > 5


def test_nearby_cameras_see_overlapping_content(city):
  """Normalized cross-correlation is higher for cameras 3 m apart than for 100 m apart."""
  cond = S.make_condition("overcast", 1)
  rng = np.random.default_rng(0)
  near, far = [], []
  streets = city.streets
  for k in range(8):
    st = streets[k % len(streets)]
    a = float(rng.uniform(st.start + 5.0, st.end - 10.0))
    turn = 0.0 if k % 2 == 0 else 90.0  # Forward and sideways views.
    heading = (st.heading + turn) % 360.0
    img = [S.render_view(city, S.Camera(*st.point(a + d, 1.5), heading), cond, 48, 72)
           for d in (0.0, 3.0)]
    other = streets[(k + 2) % len(streets)]
    b = (a - st.start + 100.0) % other.length + other.start
    far_img = S.render_view(city, S.Camera(*other.point(b, -1.5), (other.heading + 180.0 - turn)
                                           % 360.0), cond, 48, 72)
    g0, g1, g2 = gray(img[0]), gray(img[1]), gray(far_img)
    near.append(float((g0 * g1).sum()))
    far.append(float((g0 * g2).sum()))
  assert np.mean(near) > np.mean(far) + 0.2, (near, far)
  assert sum(n > f for n, f in zip(near, far)) >= 7, (near, far)


def test_conditions_change_appearance_not_geometry(city):
  """Night and day images of one pose differ in colour but keep their edges."""
  st = city.streets[1]
  cam = S.Camera(*st.point(st.start + 30.0, 1.5), (st.heading + 90.0) % 360.0)
  day = S.render_view(city, cam, S.make_condition("overcast", 0), 48, 72)
  night = S.render_view(city, cam, S.make_condition("night", 0), 48, 72)
  fog = S.render_view(city, cam, S.make_condition("fog", 0), 48, 72)
  assert day.mean() > night.mean() + 40
  assert fog.std() < day.std()
  assert S.make_condition("night", 0).night and not S.make_condition("dusk", 0).night


def test_retrieval_baseline_on_tiny_world(tiny_world):
  """Every validation query has a positive, and the thumbnail baseline scores a valid recall."""
  root, config = tiny_world
  q, db = msls.read_msls_city(str(root), config.val_cities[0])
  _, _, info = msls_ground_truth(q, db, radius_m=25.0)
  assert info["num_queries_evaluated"] == len(q) and info["num_excluded_no_positive"] == 0
  city = CityEval(q, db, thumbnail_descriptors(q.full_paths()),
                  thumbnail_descriptors(db.full_paths()))
  result, _ = evaluate_retrieval([city], ns=(1, 5), radius_m=25.0)
  assert result["num_queries"] == len(q)
  assert 0.0 <= result["recall@1"] <= result["recall@5"] <= 100.0

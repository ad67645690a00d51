"""--mode=check_data: every planted fault of a tiny MSLS world is named, a clean world passes, and
the label status agrees with the label cache."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import default
from gcl_jax import validate
from gcl_jax.data import check, msls
from gcl_jax.labels import io as labels_io
from gcl_jax.train import datasets
from gcl_jax.types import ImageTable

from test_sixdof_training import NUM_TEST, NUM_TRAIN, sixdof_config, write_scene

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CITIES = {"north": "train", "val": "val"}
SIZES = {"query": 3, "database": 4}


def _table(city: str, side: str) -> ImageTable:
  n = SIZES[side]
  keys = np.array([f"{city}_{side[0]}{i}" for i in range(n)])
  return ImageTable(root="", name=f"{city}/{side}", paths=keys, keys=keys,
                    utm=np.stack([np.arange(n) * 5.0, np.zeros(n)], -1),
                    heading=np.zeros(n), pano=np.zeros(n, bool), night=np.zeros(n, bool),
                    in_all=np.ones(n, bool))


def _write_world(root: str) -> None:
  rng = np.random.default_rng(0)
  for city in CITIES:
    msls.write_msls_city(root, city, _table(city, "query"), _table(city, "database"))
    for side in SIZES:
      for key in _table(city, side).keys:
        pixels = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(f"{root}/train_val/{city}/{side}/images/{key}.jpg",
                                     quality=90)


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("check") / "msls")
  _write_world(root)
  return root


@pytest.fixture
def world(clean_world, tmp_path) -> str:
  """A fresh copy of the clean world that a test may break."""
  root = str(tmp_path / "msls")
  shutil.copytree(clean_world, root)
  return root


def _config(root: str):
  c = default.get_config()
  c.data.root = root
  c.data.train_cities = ("north",)
  c.data.val_cities = ("val",)
  return c


def _image(root: str, city: str, side: str, i: int) -> str:
  return f"{root}/train_val/{city}/{side}/images/{city}_{side[0]}{i}.jpg"


def _plant_faults(root: str) -> dict[str, str]:
  """Breaks the world; returns {file named in the report: word its reason must contain}."""
  truncated = _image(root, "north", "database", 1)
  with open(truncated, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[:len(data) // 2])
  not_image = _image(root, "north", "query", 2)
  with open(not_image, "w", encoding="utf-8") as f:
    f.write("not a picture\n")
  missing = _image(root, "val", "query", 0)
  os.remove(missing)
  raw = f"{root}/train_val/val/database/raw.csv"
  with open(raw, encoding="utf-8") as f:
    lines = f.read().splitlines()
  fields = lines[2].split(",")
  fields[4] = "north"  # the compass angle `ca` of the second row
  lines[2] = ",".join(fields)
  with open(raw, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  with open(f"{root}/train_val/north/query/images/notes.txt", "w", encoding="utf-8") as f:
    f.write("a stray file no table lists\n")
  return {truncated: "truncated", not_image: "not an image", missing: "not found",
          f"{raw}:3": "`ca` is not a number"}


def test_clean_world_has_no_problems_and_label_status_follows_the_cache(world):
  config = _config(world)
  validate.validate_config(config, "check_data", num_devices=1, process_count=1)
  report = validate.check_dataset(config, None, num_workers=2, progress=False)
  assert report.ok and report.problems == [] and report.notes == []
  assert report.tables == ["train_val/north/query", "train_val/north/database",
                           "train_val/val/query", "train_val/val/database"]
  assert report.num_images == 2 * (SIZES["query"] + SIZES["database"])
  assert report.labels == {"north": "computed on first use: no cached labels"}
  assert report.summary().splitlines()[-1] == "no problems found"

  # Label the city the way a run does: the status says "cached" exactly when the run would reuse.
  query, database = msls.read_msls_city(world, "north")
  out_dir = datasets.labels_dir(config, world, ".")
  labels_io.label_city_cached(query, database, out_dir, "north", **datasets.label_params(config))
  assert validate.check_dataset(config, None, progress=False).labels == {"north": "cached"}
  config.labels.radius_m = 30.0
  assert validate.check_dataset(config, None, progress=False).labels == {
      "north": "computed on first use: cached with other config.labels parameters"}


def test_every_planted_fault_is_named_with_its_reason(world):
  faults = _plant_faults(world)
  report = validate.check_dataset(_config(world), None, num_workers=2, progress=False)
  assert not report.ok
  found = {p["file"]: p["reason"] for p in report.problems}
  assert set(found) == set(faults), report.summary()
  for file, word in faults.items():
    assert word in found[file], (file, found[file])
  # val/database does not parse, so its images are not counted; the rest are.
  assert report.num_images == 2 * SIZES["query"] + SIZES["database"]
  assert report.notes == [{"file": f"{world}/train_val/north/query/images/notes.txt",
                           "reason": "not listed in train_val/north/query's tables (never read)"}]
  summary = report.summary()
  for file in faults:
    assert f"problem: {file}: " in summary
  assert summary.splitlines()[-1] == "4 problem(s) found"
  assert json.loads(json.dumps(report.to_dict()))["num_problems"] == 4


def test_split_message():
  assert check.split_message("/d/raw.csv:3: column `ca` is not a number: 'x'") == (
      "/d/raw.csv:3", "column `ca` is not a number: 'x'")
  assert check.split_message("no file here: just words") == ("", "no file here: just words")


def test_main_check_data_names_the_faults_writes_json_and_exits_1(world, tmp_path):
  faults = _plant_faults(world)
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "main.py"), "--mode=check_data",
       "--config=configs/default.py", f"--config.data.root={world}",
       "--config.data.train_cities=('north',)", "--config.data.val_cities=('val',)",
       f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 1, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  for file in faults:
    assert f"problem: {file}: " in out.stdout
  saved = json.loads((workdir / "check_data.json").read_text())
  assert saved["num_problems"] == 4 and not saved["ok"]
  assert {p["file"] for p in saved["problems"]} == set(faults)


def test_sixdof_scene_images_and_pose3d_label_status(tmp_path):
  scene = write_scene(tmp_path / "chess")
  config = sixdof_config("sevenscenes", scene, tmp_path)
  validate.validate_config(config, "check_data", num_devices=1, process_count=1)
  report = validate.check_dataset(config, None, num_workers=2, progress=False)
  assert report.ok and report.num_images == NUM_TRAIN + NUM_TEST
  assert report.labels == {"chess": "computed on first use: no cached labels"}
  datasets.prepare_data(config, str(tmp_path))  # labels the scene, as a run does
  assert validate.check_dataset(config, None, progress=False).labels == {"chess": "cached"}
  frame = scene / "seq-03" / "frame-000000.color.png"
  frame.write_bytes(frame.read_bytes()[:40])
  report = validate.check_dataset(config, None, progress=False)
  assert [p["file"] for p in report.problems] == [str(frame)]

"""6-DoF datasets (data.format "sevenscenes" / "json_index") with 3-D overlap labels (pose3d):
labels cached, sampler never pairs a frame with itself, tiny end-to-end training + evaluation."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from configs import demo
from gcl_jax.data import json_index, pairs, sevenscenes
from gcl_jax.labels import pose3d
from gcl_jax.train import datasets, train
from gcl_jax.types import DatasetError

from test_end_to_end import tiny_demo_config

TRAIN_SEQS, TEST_SEQS = (1, 2), (3,)


def _pose(yaw_deg, x, z):
  """Camera-to-world pose: yaw about the (vertical) y axis, centre (x, 0, z)."""
  c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
  m = np.eye(4)
  m[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
  m[:3, 3] = [x, 0.0, z]
  return m


# seq-01 walks along x looking forward and turning right 15 degrees a frame; seq-02 looks the
# other way 0.3 m behind: neighbours overlap (psi 0.63-0.68), frames two to three apart partly
# (soft), the two sequences not at all (hard negatives). seq-03 (test): four frames next to
# training frames and one 2 m away (no database frame within eval.radius_m).
SEQUENCES = {
    1: [_pose(15 * i, 0.1 * i, 0.0) for i in range(6)],
    2: [_pose(180 + 15 * i, 0.1 * i, 0.3) for i in range(6)],
    3: [_pose(7, 0.05, 0.0), _pose(40, 0.25, 0.0), _pose(190, 0.15, 0.3),
        _pose(230, 0.45, 0.3), _pose(90, 2.0, 2.0)],
}
NUM_TRAIN = sum(len(SEQUENCES[s]) for s in TRAIN_SEQS)
NUM_TEST = sum(len(SEQUENCES[s]) for s in TEST_SEQS)


def write_scene(root, *, depth_seqs=()):
  """A 7-Scenes scene folder: 32x48 colour PNGs (a colour per viewing direction plus noise),
  4x4 pose.txt files, split files; 640x480 depth PNGs (2 m everywhere) for `depth_seqs`."""
  rng = np.random.default_rng(0)
  for seq, poses in SEQUENCES.items():
    d = root / f"seq-{seq:02d}"
    d.mkdir(parents=True)
    for f, pose in enumerate(poses):
      yaw = math.atan2(pose[0, 2], pose[2, 2])
      colour = 127 + 100 * np.array([math.cos(yaw), math.sin(yaw), math.cos(2 * yaw)])
      im = np.clip(colour + rng.normal(0, 20, (32, 48, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(im).save(d / f"frame-{f:06d}.color.png")
      np.savetxt(d / f"frame-{f:06d}.pose.txt", pose)
      if seq in depth_seqs:
        Image.fromarray(np.full((480, 640), 2000, np.uint16)).save(d / f"frame-{f:06d}.depth.png")
  (root / "TrainSplit.txt").write_text("".join(f"sequence{s}\n" for s in TRAIN_SEQS))
  (root / "TestSplit.txt").write_text("".join(f"sequence{s}\n" for s in TEST_SEQS))
  return root


def train_poses():
  return np.stack([p for s in TRAIN_SEQS for p in SEQUENCES[s]])


def write_indices(scene, out_dir):
  """The authors' JSON index files (`poses` 7-vectors) of the scene's train and test splits."""
  paths = {}
  for split in ("train", "test"):
    table, poses = sevenscenes.read_sevenscenes(str(scene), split)
    paths[split] = str(out_dir / f"{split}.json")
    json_index.write_json_index(table, paths[split], poses=poses)
  return paths


def sixdof_config(fmt, scene, workdir, num_steps=2, indices=None):
  """The end-to-end test's shrunk configs/demo.py, pointed at the tiny scene."""
  c = tiny_demo_config(num_steps)
  c.data.format = fmt
  c.data.root = str(scene)
  if indices is not None:
    c.data.train_index, c.data.eval_index = indices["train"], indices["test"]
  c.data.eval_split = "test"
  c.data.ground_axes = (0, 2)  # the x-z plane: the cameras' ground plane
  c.labels.kind = "pose3d"
  c.labels.dir = str(workdir / "labels")
  c.sampler.empty_stratum = "redraw"  # 12 frames: one batch of 8 pairs per epoch
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = num_steps
  c.eval.protocol = "at_format"  # every test frame counts, also the one without a positive
  c.eval.radius_m = 0.15
  c.eval.before_training = False
  return c


@pytest.fixture
def scene(tmp_path):
  return write_scene(tmp_path / "chess")


def _label_files(config):
  label_dir = config.labels.dir
  name = "chess" if config.data.format == "sevenscenes" else "train"
  return f"{label_dir}/{name}_pose3d.npz", f"{label_dir}/{name}_pose3d.manifest.json"


@pytest.mark.parametrize("fmt", ["sevenscenes", "json_index"])
def test_prepare_data_labels_cached_and_self_never_drawn(fmt, scene, tmp_path):
  indices = write_indices(scene, tmp_path / "index") if fmt == "json_index" else None
  config = sixdof_config(fmt, scene, tmp_path, indices=indices)
  data = datasets.prepare_data(config, str(tmp_path))

  [city] = data.train
  assert city.exclude_self and city.query is city.database and len(city.query) == NUM_TRAIN
  # Evaluation: the test frames searched in the training frames; PCA fit on the training frames.
  [(name, query, database)] = data.val
  assert (len(query), len(database)) == (NUM_TEST, NUM_TRAIN) and database is city.database
  assert data.fit[0] is city.database
  np.testing.assert_allclose(query.utm[:2], [[0.05, 0.0], [0.25, 0.0]])  # (x, z) of the camera

  # psi is the symmetrised 3-D frustum overlap of pose_pair_table for the same frames.
  poses = (json_index.read_json_poses(indices["train"]) if indices else train_poses())
  expected = pose3d.pose_pair_table(poses, pose3d.SEVEN_SCENES_DEPTH, stride=4, max_range_m=5.0)
  table = city.labels
  assert table.params["method"] == pose3d.METHOD_FRUSTUM
  np.testing.assert_array_equal(table.dense(), expected.dense())
  np.testing.assert_array_equal(table.dense("sim"), expected.dense("sim"))
  psi = table.dense()
  assert np.all(np.diag(psi) == 0) and table.num_pairs == int((psi > 0).sum())
  assert psi[0, 1] == pytest.approx(0.6319792, abs=1e-6)  # neighbours in seq-01: positive
  assert 0 < psi[0, 2] < 0.5 and psi[0, 6] == 0  # two frames on: soft; other sequence: hard
  np.testing.assert_allclose(psi, psi.T)  # "mean" symmetrised
  if fmt == "json_index":  # same frames as the scene reader, poses via quaternions
    np.testing.assert_allclose(
        psi, pose3d.pose_pair_table(train_poses(), stride=4, max_range_m=5.0).dense(), atol=2e-3)

  # Second run: the cached file is reused as is.
  npz, manifest = _label_files(config)
  mtimes = [(tmp_path / p).stat().st_mtime_ns for p in (npz, manifest)]
  again = datasets.prepare_data(config, str(tmp_path))
  assert [(tmp_path / p).stat().st_mtime_ns for p in (npz, manifest)] == mtimes
  np.testing.assert_array_equal(again.train[0].labels.psi, table.psi)
  assert json.loads((tmp_path / manifest).read_text())["format"] == "gcl_jax.pose3d_manifest"
  # A changed labelling parameter recomputes (and records it).
  config.labels.pose3d_positive_above = 0.6
  changed = datasets.prepare_data(config, str(tmp_path)).train[0].labels
  assert changed.params["positive_above"] == 0.6
  np.testing.assert_array_equal(changed.sim, (changed.psi > 0.6).astype(np.int8))

  # The sampler draws all three strata and never a frame with itself (hard negatives included).
  for binary in (False, True):
    for epoch in range(30):
      ep = pairs.sample_epoch(data.train, seed=0, epoch=epoch, binary=binary,
                              empty_stratum="redraw")
      assert len(ep) == NUM_TRAIN and np.all(ep.query != ep.database)
      np.testing.assert_array_equal(
          ep.label, (psi[ep.query, ep.database] > 0.5) if binary else psi[ep.query, ep.database])
  strata = np.concatenate([pairs.sample_epoch(data.train, seed=0, epoch=e).stratum
                           for e in range(10)])
  assert set(strata.tolist()) == {0, 1, 2}


def test_self_excluded_from_hard_negatives_even_when_it_is_the_only_candidate(scene, tmp_path):
  # Frame 5 of seq-01 overlaps frames 2-4; with the other sequence removed its hard-negative
  # complement is {0, 1}, plus itself without exclude_self.
  config = sixdof_config("sevenscenes", scene, tmp_path)
  city = datasets.prepare_data(config, str(tmp_path)).train[0]
  keep = np.arange(6)
  sub = city.query.subset(keep)
  lab = pose3d.pose_pair_table(train_poses()[keep], stride=4, max_range_m=5.0)
  for exclude_self, allowed in ((True, {0, 1}), (False, {0, 1, 5})):
    c = pairs.CityPairs("chess", sub, sub, lab, exclude_self=exclude_self)
    drawn = set()
    for epoch in range(60):
      ep = pairs.sample_epoch([c], seed=1, epoch=epoch, strata_probs=(0, 0, 1))
      drawn |= set(ep.database[ep.query == 5].tolist())
    assert drawn == allowed


def test_depth_maps_when_present(tmp_path):
  scene = write_scene(tmp_path / "chess", depth_seqs=TRAIN_SEQS)
  config = sixdof_config("sevenscenes", scene, tmp_path)
  config.labels.pose3d_use_depth = True
  config.labels.pose3d_stride = 16
  table = datasets.prepare_data(config, str(tmp_path)).train[0].labels
  assert table.params["method"] == pose3d.METHOD_DEPTH and table.params["stride"] == 16
  depth = np.full((480, 640), 2.0, np.float32)
  expected = pose3d.pose_pair_table(train_poses(), depths=[depth] * NUM_TRAIN, stride=16)
  np.testing.assert_array_equal(table.dense(), expected.dense())
  # use_depth=False ignores them: the frustum measure.
  config.labels.pose3d_use_depth = False
  assert (datasets.prepare_data(config, str(tmp_path)).train[0].labels.params["method"]
          == pose3d.METHOD_FRUSTUM)
  # Some frames without a depth map: an error naming the first missing file.
  (scene / "seq-02" / "frame-000003.depth.png").unlink()
  config.labels.pose3d_use_depth = True
  with pytest.raises(DatasetError, match=r"seq-02/frame-000003\.depth\.png: depth map not found "
                     r"\(1 of 12 frames"):
    datasets.prepare_data(config, str(tmp_path))


def test_config_errors(scene, tmp_path):
  config = sixdof_config("sevenscenes", scene, tmp_path)
  config.labels.kind = "fov"
  with pytest.raises(ValueError, match=r"config.labels.kind='fov' does not fit "
                     r"config.data.format='sevenscenes'"):
    datasets.prepare_data(config, str(tmp_path))
  # Evaluation only needs no labels: the kind is not checked.
  data = datasets.prepare_data(config, str(tmp_path), train=False)
  assert data.train == [] and len(data.val[0][1]) == NUM_TEST
  msls = demo.get_config()
  msls.labels.kind = "pose3d"
  with pytest.raises(ValueError, match=r"config.labels.kind='pose3d' does not fit "
                     r"config.data.format='msls'"):
    datasets.prepare_data(msls, str(tmp_path))
  config = sixdof_config("sevenscenes", scene, tmp_path)
  config.data.eval_split = "train_val"
  with pytest.raises(ValueError, match=r"config.data.eval_split='train_val'"):
    datasets.prepare_data(config, str(tmp_path))
  config = sixdof_config("sevenscenes", scene, tmp_path)
  config.labels.pose3d_intrinsics = "kinect"
  with pytest.raises(ValueError, match=r"config.labels.pose3d_intrinsics: intrinsics 'kinect'"):
    datasets.prepare_data(config, str(tmp_path))
  config = sixdof_config("json_index", scene, tmp_path)
  with pytest.raises(ValueError, match=r"needs config.data.train_index"):
    datasets.prepare_data(config, str(tmp_path))
  config = sixdof_config("sevenscenes", scene, tmp_path)
  config.loss.name = "triplet"
  with pytest.raises(ValueError, match=r"config.loss.name='triplet'"):
    datasets.prepare_data(config, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["sevenscenes", "json_index"])
def test_trains_and_evaluates_end_to_end(fmt, scene, tmp_path):
  indices = write_indices(scene, tmp_path / "index") if fmt == "json_index" else None
  workdir = tmp_path / "run"
  config = sixdof_config(fmt, scene, workdir, indices=indices)
  results = train.train_and_evaluate(config, str(workdir))
  assert set(results) == {"thumbnail", "trained"}
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in records)
  npz, _ = _label_files(config)
  assert (workdir / npz).stat().st_size > 0
  for name in ("thumbnail", "trained"):
    r = results[name]
    assert r["protocol"] == "at_format"
    assert (r["num_queries"], r["num_database"]) == (NUM_TEST, NUM_TRAIN)
    # The 2 m-away test frame has no positive within 0.15 m: at most 4 of 5 queries are hits.
    assert 0.0 <= r["recall@1"] <= r["recall@5"] <= 80.0
  assert results["trained"]["step"] == 2

"""7-Scenes reader, pose/heading conventions and quaternion helpers."""

import math

import numpy as np
import pytest

from gcl_jax.data import sevenscenes
from gcl_jax.types import DatasetError


def _rot_y(deg):
  c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(deg):
  c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
  return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _write_scene(root, seqs, frames=2, ext=".color.png", pose=None):
  for s in seqs:
    d = root / f"seq-{s:02d}"
    d.mkdir(parents=True)
    for f in range(frames):
      m = np.eye(4) if pose is None else pose
      m = m.copy()
      m[:3, 3] = [s, f, 10 * s + f]
      np.savetxt(d / f"frame-{f:06d}.pose.txt", m)
      (d / f"frame-{f:06d}{ext}").write_bytes(b"")
      (d / f"frame-{f:06d}.depth.png").write_bytes(b"")


def test_stairs_sample(shared_dir):
  root = shared_dir / "data" / "7scenes_stairs_sample"
  if not root.is_dir():
    pytest.skip(f"{root} not present")
  table, poses = sevenscenes.read_sevenscenes(str(root), "train")
  assert list(table.keys) == [f"seq-0{s}/frame-00000{f}" for s in (2, 3) for f in range(3)]
  assert list(table.paths) == [f"seq-0{s}/frame-00000{f}.color.jpg"
                               for s in (2, 3) for f in range(3)]
  assert poses.shape == (6, 4, 4)
  raw = np.loadtxt(root / "seq-02" / "frame-000000.pose.txt")
  np.testing.assert_array_equal(poses[0], raw)
  np.testing.assert_array_equal(table.utm[0], raw[:2, 3])
  expect = math.degrees(math.atan2(raw[0, 2], raw[1, 2])) % 360
  assert table.heading[0] == pytest.approx(expect)
  test, _ = sevenscenes.read_sevenscenes(str(root), "test")
  assert [k.split("/")[0] for k in test.keys] == ["seq-01"] * 3 + ["seq-04"] * 3
  # ground_axes=(0, 2): utm = (x, z).
  t2, p2 = sevenscenes.read_sevenscenes(str(root), "test", ground_axes=(0, 2))
  np.testing.assert_array_equal(t2.utm, p2[:, [0, 2], 3])
  assert np.isfinite(t2.heading).all()


def test_heading_convention():
  # Camera looking along world +z: straight up for axes (x, y) -> NaN; "north" for (x, z).
  assert math.isnan(sevenscenes.heading_from_rotation(np.eye(3)))
  assert sevenscenes.heading_from_rotation(np.eye(3), (0, 2)) == pytest.approx(0.0)
  # Yaw +90 about y turns the optical axis to +x = east -> 90 degrees; -90 -> 270.
  assert sevenscenes.heading_from_rotation(_rot_y(90), (0, 2)) == pytest.approx(90.0)
  assert sevenscenes.heading_from_rotation(_rot_y(-90), (0, 2)) == pytest.approx(270.0)
  # Pitch -90 about x turns +z into +y = "north" for axes (x, y).
  assert sevenscenes.heading_from_rotation(_rot_x(-90)) == pytest.approx(0.0, abs=1e-9)
  r = np.stack([_rot_y(a) for a in (0, 30, 135, 200)])
  np.testing.assert_allclose(sevenscenes.heading_from_rotation(r, (0, 2)), [0, 30, 135, 200])


def test_quaternion_roundtrip_and_sign():
  rng = np.random.default_rng(0)
  for _ in range(20):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    m = sevenscenes.matrix_from_pose7(np.concatenate([[1, 2, 3], q]))[0]
    p7 = sevenscenes.pose7_from_matrix(m)
    np.testing.assert_allclose(np.abs(p7[3:] @ q), 1.0, atol=1e-12)  # q or -q: same rotation
    if np.trace(m[:3, :3]) > 0:
      assert p7[6] > 0  # the upstream convention on the trace branch
    np.testing.assert_allclose(p7[:3], [1, 2, 3])
  # 180-degree rotations (trace < 0 branch).
  for r in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
    m = np.eye(4)
    m[:3, :3] = r
    back = sevenscenes.matrix_from_pose7(sevenscenes.pose7_from_matrix(m))[0]
    np.testing.assert_allclose(back, m, atol=1e-12)
  # Quaternion of a 90-degree yaw about y: (0, sin 45, 0, cos 45).
  m = np.eye(4)
  m[:3, :3] = _rot_y(90)
  np.testing.assert_allclose(sevenscenes.pose7_from_matrix(m)[3:],
                             [0, math.sqrt(.5), 0, math.sqrt(.5)])


def test_tiny_scene_png_and_order(tmp_path):
  _write_scene(tmp_path, (1, 3, 12))
  (tmp_path / "TrainSplit.txt").write_text("sequence12\nsequence1\n\n")
  (tmp_path / "TestSplit.txt").write_text("sequence3\n")
  t, poses = sevenscenes.read_sevenscenes(str(tmp_path), "train")
  assert list(t.paths) == ["seq-12/frame-000000.color.png", "seq-12/frame-000001.color.png",
                           "seq-01/frame-000000.color.png", "seq-01/frame-000001.color.png"]
  np.testing.assert_array_equal(t.utm, [[12, 0], [12, 1], [1, 0], [1, 1]])
  assert np.isnan(t.heading).all()  # identity rotation looks along z, perpendicular to (x, y)
  assert poses[2, 2, 3] == 10


@pytest.mark.parametrize("problem, match", [
    ("split", "TestSplit.txt:1: expected `sequenceN`, got 'seq1'"),
    ("seq", "seq-05: sequence folder not found"),
    ("pose_nan", "frame-000001.pose.txt: pose has non-finite entries"),
    ("pose_short", "frame-000000.pose.txt: expected 16 numbers"),
    ("color", "frame-000001.pose.txt: no colour image"),
])
def test_errors_name_the_file(tmp_path, problem, match):
  _write_scene(tmp_path, (1,))
  (tmp_path / "TestSplit.txt").write_text("sequence1\n")
  d = tmp_path / "seq-01"
  if problem == "split":
    (tmp_path / "TestSplit.txt").write_text("seq1\n")
  elif problem == "seq":
    (tmp_path / "TestSplit.txt").write_text("sequence1\nsequence5\n")
  elif problem == "pose_nan":
    m = np.eye(4)
    m[0, 3] = np.nan
    np.savetxt(d / "frame-000001.pose.txt", m)
  elif problem == "pose_short":
    (d / "frame-000000.pose.txt").write_text("1 0 0\n0 1 0\n")
  elif problem == "color":
    (d / "frame-000001.color.png").unlink()
  with pytest.raises(DatasetError, match=match):
    sevenscenes.read_sevenscenes(str(tmp_path), "test")

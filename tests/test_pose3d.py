"""3-D overlap labels from 6-DoF poses: closed forms on synthetic cameras, 7-Scenes real frames."""

import glob
import math
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gcl_jax.labels.pose3d import (SEVEN_SCENES_DEPTH, Intrinsics, load_depth_png, load_pose,
                                   pose_overlap, pose_overlap_matrix, pose_pair_table,
                                   pose_vector, quaternion_from_matrix)
from gcl_jax.types import SIM_NEGATIVE, SIM_POSITIVE

INTR = SEVEN_SCENES_DEPTH
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                      "7scenes_stairs_sample")


def pose(rotation=np.eye(3), t=(0.0, 0.0, 0.0)):
  p = np.eye(4)
  p[:3, :3] = rotation
  p[:3, 3] = t
  return p


def yaw(deg):
  """Rotation about the camera's y (down) axis."""
  return Rotation.from_euler("y", deg, degrees=True).as_matrix()


def render_plane(p, z_plane, intr=INTR):
  """Depth map of the world plane z = z_plane (normal +z) seen by camera-to-world pose p."""
  rows, cols = np.mgrid[0:intr.height, 0:intr.width]
  d = np.stack([(cols + 0.5 - intr.cx) / intr.fx, (rows + 0.5 - intr.cy) / intr.fy,
                np.ones_like(cols, float)], -1)
  denom = d @ p[:3, :3].T[:, 2]  # z component of the world ray direction.
  with np.errstate(divide="ignore", invalid="ignore"):
    lam = (z_plane - p[2, 3]) / denom
  return np.where(lam > 0, lam, np.nan)


# ------------------------------------------------------------------------- synthetic cameras


@pytest.mark.parametrize("stride", [1, 4])
def test_sideways_by_half_plane_width_gives_half(stride):
  z = 2.0
  a = pose()
  b = pose(t=(INTR.width * z / (2 * INTR.fx), 0.0, 0.0))  # half the plane width at depth z.
  da, db = render_plane(a, z), render_plane(b, z)
  assert pose_overlap(a, b, depth_a=da, stride=stride) == pytest.approx(0.5, abs=1e-9)
  assert pose_overlap(a, b, depth_a=da, depth_b=db, depth_tolerance_m=0.01,
                      stride=stride) == pytest.approx(0.5, abs=1e-9)
  assert pose_overlap(a, a, depth_a=da, depth_b=da, depth_tolerance_m=1e-6) == 1.0


def test_rotated_180_gives_zero():
  a = pose()
  da = render_plane(a, 2.0)
  b = pose(yaw(180.0))
  assert pose_overlap(a, b, depth_a=da) == 0.0
  assert pose_overlap(a, b) == 0.0  # frustum approximation.
  assert pose_overlap(a, a) == 1.0


def test_depth_consistency_rejects_occluded_points():
  """b sees a's plane through a nearer wall: the points project inside but are occluded."""
  a, b = pose(), pose(t=(0.1, 0.0, 0.0))
  da = render_plane(a, 3.0)
  db_wall = render_plane(b, 1.0)
  assert pose_overlap(a, b, depth_a=da) > 0.9
  assert pose_overlap(a, b, depth_a=da, depth_b=db_wall, depth_tolerance_m=0.05) == 0.0


def test_mirror_symmetric_configuration():
  """Cameras mirrored about x = 0 (toed in by 10 degrees) see each other's plane equally."""
  a = pose(yaw(10.0), (-0.4, 0.0, 0.0))
  b = pose(yaw(-10.0), (0.4, 0.0, 0.0))
  da, db = render_plane(a, 3.0), render_plane(b, 3.0)
  ab = pose_overlap(a, b, depth_a=da, stride=2)
  ba = pose_overlap(b, a, depth_a=db, stride=2)
  assert 0.3 < ab < 0.99
  assert ab == pytest.approx(ba, abs=5e-3)
  fab, fba = pose_overlap(a, b), pose_overlap(b, a)
  assert 0.1 < fab < 0.99 and fab == pytest.approx(fba, abs=0.02)


def test_frustum_forward_translation():
  """Moving 1 m forward along the axis (range 0.1-5 m): closed-form volume ratio."""
  a, b = pose(), pose(t=(0.0, 0.0, 1.0))
  # b's frustum is a's shifted forward, so (same apex angles) it lies inside a's cone; the part
  # within a's range is b's frustum between its depths 0.1 and 4: volume ratio
  # (4^3 - 0.1^3) / (5^3 - 0.1^3) = 0.512 (volumes of a pyramid's slabs grow as z^2).
  expected = (4 ** 3 - 0.1 ** 3) / (5 ** 3 - 0.1 ** 3)
  assert pose_overlap(a, b) == pytest.approx(expected, abs=1 / 16)  # 16 depth samples.
  assert pose_overlap(a, b, stride=1, num_depths=64) == pytest.approx(expected, abs=1 / 64)
  # Seen from b, a's frustum covers the whole of b's except the slab beyond a's range (4-5 m in b).
  assert pose_overlap(b, a, num_depths=64) == pytest.approx(expected, abs=1 / 64)


def test_invalid_inputs():
  with pytest.raises(ValueError, match="depth map shape .*does not match"):
    pose_overlap(pose(), pose(), depth_a=np.ones((10, 10)))
  with pytest.raises(ValueError, match="pose_b: a pose must be a finite 4x4"):
    pose_overlap(pose(), np.eye(3))
  with pytest.raises(ValueError, match="not a rotation matrix"):
    pose_overlap(pose(), pose(2 * np.eye(3)))
  with pytest.raises(ValueError, match="depth_tolerance_m needs depth_b"):
    pose_overlap(pose(), pose(), depth_a=render_plane(pose(), 1.0), depth_tolerance_m=0.1)
  with pytest.raises(ValueError, match="fx must be a positive"):
    Intrinsics(0.0, 1.0, 0.0, 0.0, 10, 10)
  assert pose_overlap(pose(), pose(), depth_a=np.full((480, 640), np.nan)) == 0.0


# ------------------------------------------------------------------------ quaternions


def test_quaternion_closed_forms():
  np.testing.assert_allclose(quaternion_from_matrix(np.eye(4)), [0, 0, 0, 1])
  # The docstring example of transformations.quaternion_from_matrix (Gohlke, scalar-last version):
  # rotation_matrix(0.123, (1, 2, 3)).
  axis = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
  np.testing.assert_allclose(quaternion_from_matrix(Rotation.from_rotvec(0.123 * axis).as_matrix()),
                             [0.0164262, 0.0328524, 0.0492786, 0.9981095], atol=1e-7)
  s = math.sqrt(0.5)
  np.testing.assert_allclose(quaternion_from_matrix(Rotation.from_euler("z", 90, degrees=True)
                                                    .as_matrix()), [0, 0, s, s], atol=1e-12)
  np.testing.assert_allclose(quaternion_from_matrix(np.diag([1.0, -1.0, -1.0])), [1, 0, 0, 0],
                             atol=1e-12)  # 180 degrees about x: the non-trace branch.
  rots = Rotation.random(200, random_state=0)
  for m, ref in zip(rots.as_matrix(), rots.as_quat()):  # scipy: scalar-last too.
    q = quaternion_from_matrix(m)
    assert abs(np.linalg.norm(q) - 1.0) < 1e-12
    np.testing.assert_allclose(q, ref * np.sign(ref @ q), atol=1e-12)  # same rotation.
    if np.trace(m) + 1.0 > 1.0:  # trace branch: w > 0.
      assert q[3] > 0
  v = pose_vector(pose(Rotation.from_euler("x", 30, degrees=True).as_matrix(), (1, 2, 3)))
  np.testing.assert_allclose(v, [1, 2, 3, math.sin(math.radians(15)), 0, 0,
                                 math.cos(math.radians(15))], atol=1e-12)


def test_load_depth_png(tmp_path):
  from PIL import Image
  raw = np.array([[0, 1000, 65535], [2500, 65534, 1]], np.uint16)
  path = tmp_path / "frame-000000.depth.png"
  Image.fromarray(raw).save(path)
  d = load_depth_png(str(path))
  assert d.dtype == np.float32
  np.testing.assert_allclose(d, [[np.nan, 1.0, np.nan], [2.5, 65.534, 0.001]], rtol=1e-6)


# ------------------------------------------------------------------- 7-Scenes stairs sample


@pytest.fixture(scope="module")
def stairs():
  if not os.path.isdir(SAMPLE):
    pytest.skip(f"{SAMPLE} (real 7-Scenes stairs frames from ../shared/data) is not present")
  poses, depths, names = [], [], []
  for f in sorted(glob.glob(os.path.join(SAMPLE, "seq-*", "frame-*.pose.txt"))):
    poses.append(load_pose(f))
    depths.append(load_depth_png(f.replace(".pose.txt", ".depth.png")))
    names.append(os.path.relpath(f, SAMPLE))
  assert len(poses) == 12  # seq-01..04 x 3 consecutive frames.
  return poses, depths, names


def test_stairs_self_and_consecutive(stairs):
  poses, depths, _ = stairs
  m = pose_overlap_matrix(poses, depths=depths)
  mc = pose_overlap_matrix(poses, depths=depths, depth_tolerance_m=0.05)
  np.testing.assert_array_equal(np.diag(m), 1.0)
  assert np.all(np.diag(mc) > 0.99)
  for s in range(4):  # consecutive frames of one sequence.
    for i in range(2):
      a = 3 * s + i
      assert m[a, a + 1] > 0.9 and mc[a, a + 1] > 0.85, (a, m[a, a + 1], mc[a, a + 1])
  # seq-01 vs seq-04: different sequences, far apart in view: near 0 with the consistency check.
  far = mc[0:3, 9:12]
  assert far.max() < 0.06 and mc[9:12, 0:3].max() < 0.06
  assert far.max() < 0.1 * min(mc[0, 1], mc[9, 10])
  # Frustum approximation (no depth): equal frustum volumes make it symmetric up to sampling.
  f = pose_overlap_matrix(poses)
  np.testing.assert_allclose(f, f.T, atol=0.03)
  np.testing.assert_array_equal(np.diag(f), 1.0)


def test_stairs_pair_table(stairs):
  poses, depths, _ = stairs
  t = pose_pair_table(poses, depths=depths, stride=8)
  assert (t.num_queries, t.num_database) == (12, 12)
  dense = t.dense("psi")
  np.testing.assert_array_equal(np.diag(dense), 0.0)  # self pairs are not listed.
  np.testing.assert_allclose(dense, dense.T, atol=1e-6)  # mean-symmetrised.
  assert set(np.unique(t.sim)) <= {SIM_POSITIVE, SIM_NEGATIVE}
  np.testing.assert_array_equal(t.sim == SIM_POSITIVE, t.psi > 0.5)
  np.testing.assert_allclose(t.dist[0], np.linalg.norm(poses[0][:3, 3] - poses[t.db_idx[0]][:3, 3]),
                             rtol=1e-6)
  assert t.params["method"] == "pose3d-depth/1"

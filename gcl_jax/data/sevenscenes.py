"""Reader for Microsoft 7-Scenes (one scene folder) and 6-DoF pose helpers.

    <scene>/TrainSplit.txt, TestSplit.txt      lines `sequence1`, `sequence2`, ... -> seq-01, seq-02
    <scene>/seq-NN/frame-XXXXXX.color.png      (or .color.jpg in recompressed copies)
    <scene>/seq-NN/frame-XXXXXX.depth.png      16-bit millimetres, 65535 = invalid
    <scene>/seq-NN/frame-XXXXXX.pose.txt       4x4 camera-to-world matrix, metres

Row order: split-file order of the sequences, then sorted unique frame stems (the authors'
`create_idx_scene`).

Axis convention. The pose maps camera coordinates (OpenCV/Kinect: x right, y down, z = viewing
direction) to world coordinates; the world frame is KinectFusion's. The table's planar position is
`utm = (t[a], t[b])` and its heading is the compass angle of the viewing direction `R[:, 2]`
projected on the plane of world axes (a, b), measured clockwise from axis b towards axis a:
`heading = atan2(d[a], d[b])` in degrees mod 360 (axis a plays "east", axis b "north"). The default
`ground_axes=(0, 1)` takes (x, y) as asked by the project; KinectFusion's world frame is the first
camera's frame, whose y axis points roughly DOWN, so for a level first camera the physical ground
plane is x-z and `ground_axes=(0, 2)` gives a planar, gravity-aligned layout (in the "stairs"
sample the camera's down axis maps to world (0.38, 0.84, -0.39): y is the near-vertical axis). Heading is NaN when
the viewing direction is (within 1e-6) perpendicular to the chosen plane. Full 6-DoF poses are
returned beside the table for 3-D overlap labels.
"""

from __future__ import annotations

import os
import re

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.types import DatasetError
from gcl_jax.types import ImageTable
from gcl_jax.labels import pose3d

_SEQ = re.compile(r"^sequence(\d+)$")
_FRAME = re.compile(r"^(frame-\d+)\.pose\.txt$")
COLOR_SUFFIXES = (".color.png", ".color.jpg")


def heading_from_rotation(rotation: np.ndarray,
                          ground_axes: tuple[int, int] = (0, 1)) -> np.ndarray:
  """Compass heading (degrees, clockwise from axis b towards axis a) of camera-to-world rotations.

  Args:
    rotation: (..., 3, 3) camera-to-world rotations; the camera looks along its +z axis.
    ground_axes: (a, b) world axes playing east and north.

  Returns:
    (...) headings in [0, 360); NaN when the projected viewing direction has norm < 1e-6.
  """
  a, b = ground_axes
  d = np.asarray(rotation, np.float64)[..., :, 2]
  east, north = d[..., a], d[..., b]
  heading = np.mod(np.degrees(np.arctan2(east, north)), 360.0)
  return np.where(np.hypot(east, north) < 1e-6, np.nan, heading)


def matrix_from_pose7(pose: np.ndarray) -> np.ndarray:
  """[tx, ty, tz, qx, qy, qz, qw] rows (N, 7) -> (N, 4, 4) camera-to-world matrices."""
  pose = np.asarray(pose, np.float64).reshape(-1, 7)
  t, q = pose[:, :3], pose[:, 3:]
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  x, y, z, w = q.T
  r = np.stack([
      1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
      2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
      2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
  out = np.tile(np.eye(4), (len(pose), 1, 1))
  out[:, :3, :3] = r
  out[:, :3, 3] = t
  return out


# The authors' index-file 7-vector [tx, ty, tz, qx, qy, qz, qw] of a camera-to-world pose.
pose7_from_matrix = pose3d.pose_vector


def depth_path(color_path: str) -> str | None:
  """`.../frame-XXXXXX.depth.png` beside a 7-Scenes colour image; None for other file names."""
  for suffix in COLOR_SUFFIXES:
    if color_path.endswith(suffix):
      return color_path[:-len(suffix)] + ".depth.png"
  return None


def read_pose(path: str) -> np.ndarray:
  """Reads one 4x4 pose file; raises DatasetError naming it when malformed or non-finite."""
  if not gcl_io.exists(path):
    raise DatasetError(f"{path}: pose file not found")
  with gcl_io.open(path, "r") as f:
    text = f.read()
  try:
    values = np.array([float(v) for v in text.split()], np.float64)
  except ValueError as e:
    raise DatasetError(f"{path}: pose file has a non-numeric entry ({e})") from None
  if values.size != 16:
    raise DatasetError(f"{path}: expected 16 numbers (4x4 matrix), got {values.size}")
  pose = values.reshape(4, 4)
  if not np.all(np.isfinite(pose)):
    raise DatasetError(f"{path}: pose has non-finite entries")
  if not np.allclose(pose[3], [0, 0, 0, 1], atol=1e-6):
    raise DatasetError(f"{path}: last row must be [0 0 0 1], got {pose[3].tolist()}")
  r = pose[:3, :3]
  if not np.allclose(r.T @ r, np.eye(3), atol=1e-3):
    raise DatasetError(f"{path}: rotation part is not orthonormal")
  return pose


def read_split_file(path: str) -> list[str]:
  """`sequenceN` lines -> sequence folder names `seq-NN`, in file order."""
  if not gcl_io.exists(path):
    raise DatasetError(f"{path}: split file not found")
  with gcl_io.open(path, "r") as f:
    lines = f.read().splitlines()
  out = []
  for line_no, line in enumerate(lines, start=1):
    line = line.strip()
    if not line:
      continue
    m = _SEQ.match(line)
    if m is None:
      raise DatasetError(f"{path}:{line_no}: expected `sequenceN`, got {line!r}")
    out.append(f"seq-{int(m.group(1)):02d}")
  if not out:
    raise DatasetError(f"{path}: no sequences listed")
  return out


def read_sevenscenes(root: str, split: str, ground_axes: tuple[int, int] = (0, 1)
                     ) -> tuple[ImageTable, np.ndarray]:
  """Reads one 7-Scenes scene split.

  Args:
    root: the scene folder (holding TrainSplit.txt, TestSplit.txt and seq-NN/).
    split: "train" or "test".
    ground_axes: world axes (a, b) used as (east, north) for `utm` and `heading`; see the module
      docstring.

  Returns:
    (table, poses): paths `seq-NN/frame-XXXXXX.color.{png,jpg}` relative to `root`, keys
    `seq-NN/frame-XXXXXX`, utm = camera centre on the chosen axes, heading of the viewing
    direction; poses (N, 4, 4) camera-to-world.

  Raises:
    DatasetError: missing split file, sequence folder, colour image or malformed pose (named).
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  root = root.rstrip("/")
  split_path = f"{root}/{split.capitalize()}Split.txt"
  paths, keys, poses = [], [], []
  for seq in read_split_file(split_path):
    seq_dir = f"{root}/{seq}"
    if not gcl_io.isdir(seq_dir):
      raise DatasetError(f"{seq_dir}: sequence folder not found (listed in {split_path})")
    files = set(gcl_io.listdir(seq_dir))
    stems = sorted({m.group(1) for f in files if (m := _FRAME.match(f.rstrip("/")))})
    if not stems:
      raise DatasetError(f"{seq_dir}: no frame-XXXXXX.pose.txt files")
    for stem in stems:
      color = next((stem + s for s in COLOR_SUFFIXES if stem + s in files), None)
      if color is None:
        raise DatasetError(f"{seq_dir}/{stem}.pose.txt: no colour image "
                           f"({' or '.join(stem + s for s in COLOR_SUFFIXES)})")
      paths.append(f"{seq}/{color}")
      keys.append(f"{seq}/{stem}")
      poses.append(read_pose(f"{seq_dir}/{stem}.pose.txt"))
  poses = np.stack(poses)
  a, b = ground_axes
  n = len(paths)
  table = ImageTable(
      root=root,
      name=f"{os.path.basename(root)}/{split}",
      paths=np.array(paths),
      keys=np.array(keys),
      utm=np.stack([poses[:, a, 3], poses[:, b, 3]], -1),
      heading=heading_from_rotation(poses[:, :3, :3], ground_axes),
      pano=np.zeros(n, bool),
      night=np.zeros(n, bool),
      in_all=np.ones(n, bool),
  )
  return table, poses

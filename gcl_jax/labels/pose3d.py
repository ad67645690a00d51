"""Graded 3-D overlap labels from 6-DoF camera poses (7-Scenes, TB-Places style).

Conventions:

* Poses are 4x4 camera-to-world matrices T (7-Scenes `frame-XXXXXX.pose.txt`): a point X_c in the
  camera frame (x right, y down, z forward, metres) is at T[:3, :3] X_c + T[:3, 3] in the world.
* Pinhole intrinsics (fx, fy, cx, cy, width, height) in pixels. Pixel (col, row) covers
  [col, col + 1) x [row, row + 1) and has its centre at (col + 0.5, row + 0.5); a point projects
  inside the image when 0 <= u < width and 0 <= v < height (so cx = width / 2 is the image centre).
* 7-Scenes: depth PNGs are 16-bit millimetres with 65535 (and 0) invalid. The depth maps are NOT
  registered to the colour images, so back-projection uses the DEPTH camera's intrinsics
  (fx = fy = 585, cx = 320, cy = 240, 640 x 480: `SEVEN_SCENES_DEPTH`); the colour camera
  (fx = fy = 525) sees a slightly wider view of the same place, which matters little for labels.

Two overlap measures, both in [0, 1] and not symmetric in general (use `symmetrize`):

* with depth (`pose_overlap(..., depth_a=...)`): the fraction of a's valid depth pixels (sampled on
  a grid of `stride` pixels) whose back-projected 3-D points project inside b's image with positive
  depth; with `depth_b` and `depth_tolerance_m`, a point counts only if b's depth map at that pixel
  is valid and within the tolerance of the point's depth in b (an occlusion / consistency check);
* without depth: a frustum-overlap approximation, the fraction of the VOLUME of a's viewing
  frustum between `near_m` and `max_range_m` that lies inside b's frustum (same range). The volume
  is sampled deterministically: a grid of pixel centres times `num_depths` depths placed at
  equal-volume quantiles z_k = (near^3 + (k + 1/2)/K (far^3 - near^3))^(1/3), so every sample stands
  for the same volume. This is the TB-Places-style label of GCL_REFERENCE.md 2.4 (which is
  unverified upstream); it ignores occlusion.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from gcl_jax.types import PairTable, SIM_NEGATIVE, SIM_POSITIVE

METHOD_DEPTH = "pose3d-depth/1"
METHOD_FRUSTUM = "pose3d-frustum/1"


@dataclasses.dataclass(frozen=True)
class Intrinsics:
  """Pinhole camera intrinsics in pixels (see the module docstring for the pixel convention)."""

  fx: float
  fy: float
  cx: float
  cy: float
  width: int
  height: int

  def __post_init__(self):
    for name in ("fx", "fy"):
      v = getattr(self, name)
      if not (np.isfinite(v) and v > 0):
        raise ValueError(f"Intrinsics.{name} must be a positive focal length in pixels, got {v!r}")
    for name in ("width", "height"):
      v = getattr(self, name)
      if int(v) != v or v < 1:
        raise ValueError(f"Intrinsics.{name} must be a positive integer, got {v!r}")


SEVEN_SCENES_DEPTH = Intrinsics(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)
SEVEN_SCENES_COLOR = Intrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)
# Named intrinsics (`intrinsics_from_spec`): "7scenes" is the depth camera, the one depth maps are
# back-projected with (the frustum measure uses the same camera by default).
INTRINSICS_PRESETS = {"7scenes": SEVEN_SCENES_DEPTH, "7scenes_color": SEVEN_SCENES_COLOR}


def intrinsics_from_spec(spec: str) -> Intrinsics:
  """A preset name of INTRINSICS_PRESETS, or "fx,fy,cx,cy,width,height" in pixels.

  Raises:
    ValueError: naming the spec when it is neither.
  """
  if spec in INTRINSICS_PRESETS:
    return INTRINSICS_PRESETS[spec]
  parts = str(spec).split(",")
  try:
    values = [float(v) for v in parts]
  except ValueError:
    values = []
  if len(values) != 6:
    raise ValueError(f"intrinsics {spec!r}: expected one of {sorted(INTRINSICS_PRESETS)} or "
                     "'fx,fy,cx,cy,width,height' (six numbers, pixels)")
  fx, fy, cx, cy, width, height = values
  if width != int(width) or height != int(height):
    raise ValueError(f"intrinsics {spec!r}: width and height must be integers")
  return Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=int(width), height=int(height))


def quaternion_from_matrix(matrix: np.ndarray) -> np.ndarray:
  """Unit quaternion [x, y, z, w] (scalar LAST) of a rotation matrix (3x3 or 4x4 homogeneous).

  Port of `transformations.quaternion_from_matrix` (Gohlke, 2009 version) used by the upstream
  7-Scenes indexer: when trace(M4) > M4[3, 3] (the trace branch) the quaternion has w > 0;
  otherwise the largest diagonal element picks the branch (its component is positive).

  Raises:
    ValueError: if `matrix` is not 3x3 or 4x4 or is not finite.
  """
  m = np.asarray(matrix, np.float64)
  if m.shape == (3, 3):
    m4 = np.eye(4)
    m4[:3, :3] = m
    m = m4
  if m.shape != (4, 4):
    raise ValueError(f"quaternion_from_matrix expects a 3x3 or 4x4 matrix, got shape {m.shape}")
  if not np.all(np.isfinite(m)):
    raise ValueError(f"quaternion_from_matrix: matrix has non-finite entries:\n{m}")
  q = np.empty(4)
  t = np.trace(m)
  if t > m[3, 3]:
    q[3] = t
    q[2] = m[1, 0] - m[0, 1]
    q[1] = m[0, 2] - m[2, 0]
    q[0] = m[2, 1] - m[1, 2]
  else:
    i, j, k = 0, 1, 2
    if m[1, 1] > m[0, 0]:
      i, j, k = 1, 2, 0
    if m[2, 2] > m[i, i]:
      i, j, k = 2, 0, 1
    t = m[i, i] - (m[j, j] + m[k, k]) + m[3, 3]
    q[i] = t
    q[j] = m[i, j] + m[j, i]
    q[k] = m[k, i] + m[i, k]
    q[3] = m[k, j] - m[j, k]
  return q * (0.5 / np.sqrt(t * m[3, 3]))


def pose_vector(pose: np.ndarray) -> np.ndarray:
  """The upstream 7-vector [tx, ty, tz, qx, qy, qz, qw] of a 4x4 camera-to-world pose."""
  pose = _check_pose(pose, "pose")
  return np.concatenate([pose[:3, 3], quaternion_from_matrix(pose)])


def load_pose(path: str) -> np.ndarray:
  """Reads a 7-Scenes `pose.txt` (4x4 camera-to-world, whitespace separated)."""
  try:
    m = np.loadtxt(path, dtype=np.float64)
  except ValueError as e:
    raise ValueError(f"{path}: not a 4x4 matrix of numbers: {e}") from e
  return _check_pose(m, path)


def load_depth_png(path: str, *, scale: float = 1e-3, invalid: Sequence[int] = (0, 65535)
                   ) -> np.ndarray:
  """Reads a 16-bit depth PNG (7-Scenes: millimetres) as float32 metres, NaN where invalid.

  Raises:
    FileNotFoundError: if `path` does not exist.
    ValueError: if the image is not single-channel 16-bit.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise FileNotFoundError(f"depth image {path} does not exist")
  with Image.open(path) as im:
    if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
      raise ValueError(f"{path}: expected a single-channel 16-bit depth PNG, got mode {im.mode}")
    raw = np.array(im).astype(np.int64)
  depth = raw.astype(np.float32) * np.float32(scale)
  depth[np.isin(raw, np.asarray(invalid, np.int64))] = np.nan
  return depth


def _check_pose(pose: np.ndarray, what: str) -> np.ndarray:
  pose = np.asarray(pose, np.float64)
  if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
    raise ValueError(f"{what}: a pose must be a finite 4x4 camera-to-world matrix, got shape "
                     f"{pose.shape}")
  r = pose[:3, :3]
  if not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
    raise ValueError(f"{what}: the rotation part of the pose is not a rotation matrix:\n{r}")
  return pose


def _check_depth(depth: np.ndarray, intr: Intrinsics, what: str) -> np.ndarray:
  depth = np.asarray(depth, np.float64)
  if depth.shape != (intr.height, intr.width):
    raise ValueError(f"{what}: depth map shape {depth.shape} does not match the intrinsics' "
                     f"(height, width) = ({intr.height}, {intr.width})")
  return depth


def _pixel_grid(intr: Intrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
  """(rows, cols) of the sampled pixels: every `stride`-th pixel, offset by stride // 2."""
  if stride < 1:
    raise ValueError(f"stride must be >= 1, got {stride!r}")
  rows = np.arange(stride // 2, intr.height, stride)
  cols = np.arange(stride // 2, intr.width, stride)
  return np.repeat(rows, len(cols)), np.tile(cols, len(rows))


def backproject(depth: np.ndarray, pose: np.ndarray, intr: Intrinsics, *, stride: int = 4
                ) -> np.ndarray:
  """World points (M, 3) of the valid depth pixels of one frame, sampled every `stride` pixels."""
  depth = _check_depth(depth, intr, "depth")
  pose = _check_pose(pose, "pose")
  rows, cols = _pixel_grid(intr, stride)
  z = depth[rows, cols]
  ok = np.isfinite(z) & (z > 0)
  rows, cols, z = rows[ok], cols[ok], z[ok]
  x = (cols + 0.5 - intr.cx) / intr.fx * z
  y = (rows + 0.5 - intr.cy) / intr.fy * z
  pts = np.stack([x, y, z], 1)
  return pts @ pose[:3, :3].T + pose[:3, 3]


def _project(points: np.ndarray, pose: np.ndarray, intr: Intrinsics
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(u, v, z) of world points in the camera with camera-to-world `pose`."""
  pc = (points - pose[:3, 3]) @ pose[:3, :3]  # R^T (X - t), row-wise.
  z = pc[:, 2]
  with np.errstate(divide="ignore", invalid="ignore"):
    u = intr.fx * pc[:, 0] / z + intr.cx
    v = intr.fy * pc[:, 1] / z + intr.cy
  return u, v, z


def _visible_fraction(points: np.ndarray, pose_b: np.ndarray, intr: Intrinsics,
                      depth_b: np.ndarray | None, depth_tolerance_m: float | None,
                      z_range: tuple[float, float] | None = None) -> float:
  """Fraction of `points` inside b's image with positive depth (and consistent, optionally)."""
  if len(points) == 0:
    return 0.0
  u, v, z = _project(points, pose_b, intr)
  inside = (z > 0) & (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height)
  if z_range is not None:
    inside &= (z >= z_range[0]) & (z <= z_range[1])
  if depth_b is not None and depth_tolerance_m is not None:
    idx = np.flatnonzero(inside)
    zb = depth_b[v[idx].astype(np.int64), u[idx].astype(np.int64)]
    ok = np.isfinite(zb) & (np.abs(zb - z[idx]) <= depth_tolerance_m)
    inside[idx[~ok]] = False
  return float(np.count_nonzero(inside)) / len(points)


def frustum_points(pose: np.ndarray, intr: Intrinsics, *, near_m: float = 0.1,
                   max_range_m: float = 5.0, stride: int = 16, num_depths: int = 16
                   ) -> np.ndarray:
  """Equal-volume samples (M, 3) of a camera's viewing frustum between near_m and max_range_m."""
  if not (0 < near_m < max_range_m):
    raise ValueError(f"need 0 < near_m < max_range_m, got near_m={near_m!r}, "
                     f"max_range_m={max_range_m!r}")
  if num_depths < 1:
    raise ValueError(f"num_depths must be >= 1, got {num_depths!r}")
  pose = _check_pose(pose, "pose")
  rows, cols = _pixel_grid(intr, stride)
  k = (np.arange(num_depths) + 0.5) / num_depths
  zs = (near_m ** 3 + k * (max_range_m ** 3 - near_m ** 3)) ** (1.0 / 3.0)
  z = np.repeat(zs, len(rows))
  x = np.tile((cols + 0.5 - intr.cx) / intr.fx, num_depths) * z
  y = np.tile((rows + 0.5 - intr.cy) / intr.fy, num_depths) * z
  return np.stack([x, y, z], 1) @ pose[:3, :3].T + pose[:3, 3]


def pose_overlap(pose_a: np.ndarray, pose_b: np.ndarray,
                 intrinsics: Intrinsics = SEVEN_SCENES_DEPTH, *, depth_a: np.ndarray | None = None, depth_b: np.ndarray | None = None,
                 depth_tolerance_m: float | None = None, stride: int = 4, near_m: float = 0.1,
                 max_range_m: float = 5.0, num_depths: int = 16) -> float:
  """Graded 3-D overlap of camera a with camera b (fraction of a's content seen by b).

  Args:
    pose_a, pose_b: 4x4 camera-to-world poses.
    intrinsics: pinhole intrinsics shared by both cameras (and their depth maps).
    depth_a: (height, width) depth of a in metres (NaN / <= 0 invalid). Given: the depth measure;
      None: the frustum approximation (see the module docstring).
    depth_b: b's depth, for the consistency check (used only with `depth_tolerance_m`).
    depth_tolerance_m: maximum |depth of the point in b - b's measured depth| in metres; None
      disables the check.
    stride: pixel sampling step (depth measure: every stride-th pixel; frustum: 4 x stride).
    near_m, max_range_m, num_depths: the frustum's range and its number of depth samples.

  Returns:
    overlap in [0, 1]; 0 when a has no valid depth pixel.

  Raises:
    ValueError: on a malformed pose, depth map or parameter (naming which).
  """
  pose_b = _check_pose(pose_b, "pose_b")
  if depth_a is not None:
    pts = backproject(depth_a, pose_a, intrinsics, stride=stride)
    db = None if depth_b is None else _check_depth(depth_b, intrinsics, "depth_b")
    if depth_tolerance_m is not None and db is None:
      raise ValueError("depth_tolerance_m needs depth_b (b's depth map)")
    return _visible_fraction(pts, pose_b, intrinsics, db, depth_tolerance_m)
  pts = frustum_points(pose_a, intrinsics, near_m=near_m, max_range_m=max_range_m,
                       stride=4 * stride, num_depths=num_depths)
  return _visible_fraction(pts, pose_b, intrinsics, None, None, (near_m, max_range_m))


def symmetrize(matrix: np.ndarray, how: str = "mean") -> np.ndarray:
  """Symmetric version of an (N, N) overlap matrix: elementwise "mean", "min" or "max" of M, M^T."""
  fn = {"mean": lambda a, b: 0.5 * (a + b), "min": np.minimum, "max": np.maximum}
  if how not in fn:
    raise ValueError(f"how must be one of {sorted(fn)}, got {how!r}")
  return fn[how](matrix, matrix.T)


def pose_overlap_matrix(poses: Sequence[np.ndarray] | np.ndarray,
                        intrinsics: Intrinsics = SEVEN_SCENES_DEPTH, *,
                        depths: Sequence[np.ndarray] | None = None,
                        depth_tolerance_m: float | None = None, stride: int = 4,
                        near_m: float = 0.1, max_range_m: float = 5.0, num_depths: int = 16,
                        symmetric: str | None = None) -> np.ndarray:
  """Dense (N, N) float32 matrix M[a, b] = pose_overlap(frame a, frame b) (small sets of frames).

  Each frame's points (back-projected depth, or frustum samples) are computed once. `symmetric`
  ("mean", "min", "max" or None) symmetrises the result (see `symmetrize`).
  """
  poses = [_check_pose(p, f"poses[{i}]") for i, p in enumerate(poses)]
  n = len(poses)
  if depths is not None and len(depths) != n:
    raise ValueError(f"got {len(depths)} depth maps for {n} poses")
  if depths is not None:
    depths = [_check_depth(d, intrinsics, f"depths[{i}]") for i, d in enumerate(depths)]
    pts = [backproject(d, p, intrinsics, stride=stride) for d, p in zip(depths, poses)]
    z_range = None
  else:
    pts = [frustum_points(p, intrinsics, near_m=near_m, max_range_m=max_range_m,
                          stride=4 * stride, num_depths=num_depths) for p in poses]
    z_range = (near_m, max_range_m)
  if depth_tolerance_m is not None and depths is None:
    raise ValueError("depth_tolerance_m needs depths")
  out = np.zeros((n, n), np.float32)
  for a in range(n):
    for b in range(n):
      out[a, b] = _visible_fraction(pts[a], poses[b], intrinsics,
                                    None if depths is None else depths[b], depth_tolerance_m,
                                    z_range)
  return out if symmetric is None else symmetrize(out, symmetric)


def pose_pair_table(poses: Sequence[np.ndarray] | np.ndarray,
                    intrinsics: Intrinsics = SEVEN_SCENES_DEPTH, *,
                    depths: Sequence[np.ndarray] | None = None, positive_above: float = 0.5,
                    include_self: bool = False, symmetric: str | None = "mean",
                    **overlap_kwargs) -> PairTable:
  """Sparse PairTable over frames x frames (queries = database = the frames) of the 3-D overlap.

  Lists every pair with overlap > 0. psi = the (by default mean-symmetrised) overlap;
  sim = SIM_POSITIVE where psi > positive_above (upstream's 7-Scenes/TB-Places positives are
  fov > 0.5, GCL_REFERENCE.md 6.5), else SIM_NEGATIVE; dist = distance between camera centres.
  The diagonal (a frame with itself) is left out unless `include_self` (upstream's diagonal is 0).

  Args:
    poses, intrinsics, depths: as `pose_overlap_matrix`.
    positive_above: threshold of the binary label.
    include_self: keep the (a, a) pairs.
    symmetric: as `pose_overlap_matrix` ("mean" by default; None keeps M[a, b] as is).
    **overlap_kwargs: depth_tolerance_m, stride, near_m, max_range_m, num_depths.
  """
  params = pose_pair_table_params(intrinsics, with_depths=depths is not None,
                                  positive_above=positive_above, include_self=include_self,
                                  symmetric=symmetric, **overlap_kwargs)
  m = pose_overlap_matrix(poses, intrinsics, depths=depths, symmetric=symmetric,
                          **overlap_kwargs).astype(np.float32)
  n = m.shape[0]
  if not include_self:
    np.fill_diagonal(m, 0.0)
  rows, cols = np.nonzero(m > 0)
  centres = np.stack([np.asarray(p, np.float64)[:3, 3] for p in poses]) if n else np.zeros((0, 3))
  indptr = np.zeros(n + 1, np.int64)
  np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
  psi = m[rows, cols]
  return PairTable(num_queries=n, num_database=n, indptr=indptr, db_idx=cols.astype(np.int32),
                   psi=psi, sim=np.where(psi > positive_above, SIM_POSITIVE,
                                         SIM_NEGATIVE).astype(np.int8),
                   dist=np.linalg.norm(centres[rows] - centres[cols], axis=1).astype(np.float32),
                   params=params)


def pose_pair_table_params(intrinsics: Intrinsics = SEVEN_SCENES_DEPTH, *, with_depths: bool,
                           positive_above: float = 0.5, include_self: bool = False,
                           symmetric: str | None = "mean", **overlap_kwargs) -> dict:
  """The `params` that `pose_pair_table` records for these arguments (without computing labels).

  `with_depths` says whether depth maps are given (the depth measure) or not (the frustum one);
  `overlap_kwargs` are recorded as given, so a cache compares like with like.
  """
  unknown = sorted(set(overlap_kwargs) - _OVERLAP_KWARGS)
  if unknown:
    raise TypeError(f"unknown overlap parameter(s) {unknown}; expected some of "
                    f"{sorted(_OVERLAP_KWARGS)}")
  return {"method": METHOD_DEPTH if with_depths else METHOD_FRUSTUM,
          "intrinsics": dataclasses.asdict(intrinsics), "positive_above": float(positive_above),
          "symmetric": symmetric, "include_self": bool(include_self), **overlap_kwargs}


_OVERLAP_KWARGS = frozenset({"depth_tolerance_m", "stride", "near_m", "max_range_m", "num_depths"})

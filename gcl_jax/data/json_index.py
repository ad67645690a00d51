"""The authors' JSON index files (GCL `src/labeling/create_json_idx.py`, GCL_REFERENCE 2.1, 6.3).

    {"im_prefix": "<root as given>",                 (never used by the loaders)
     "im_paths": ["train_val/cph/query/images/<key>.jpg", ...],
     "loc":   [[easting, northing, ca], ...]}        MSLS and other GPS datasets, or
     "poses": [[tx, ty, tz, qx, qy, qz, qw], ...]}   7-Scenes / TB-Places (camera-to-world,
                                                      quaternion scalar-last)

Row i of the file is row i of the label matrices, so the order is kept as is. For `poses` files the
table's utm/heading follow `gcl_jax.data.sevenscenes` (ground axes (x, y) by default).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.data import msls
from gcl_jax.types import DatasetError
from gcl_jax.data.sevenscenes import heading_from_rotation, matrix_from_pose7, pose7_from_matrix
from gcl_jax.types import ImageTable


def _load(path: str) -> dict:
  if not gcl_io.exists(path):
    raise DatasetError(f"{path}: index file not found")
  with gcl_io.open(path, "r") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise DatasetError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(data, dict) or "im_paths" not in data:
    raise DatasetError(f"{path}: missing key `im_paths`")
  paths = data["im_paths"]
  if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
    raise DatasetError(f"{path}: `im_paths` must be a list of strings")
  return data


def _rows(path: str, data: dict, key: str, width: int) -> np.ndarray:
  rows = data[key]
  n = len(data["im_paths"])
  if not isinstance(rows, list) or len(rows) != n:
    raise DatasetError(f"{path}: `{key}` has {len(rows) if isinstance(rows, list) else '?'} rows, "
                       f"`im_paths` has {n}")
  out = np.empty((n, width), np.float64)
  for i, row in enumerate(rows):
    if not isinstance(row, list) or len(row) != width:
      raise DatasetError(f"{path}: `{key}`[{i}] must be a list of {width} numbers, got {row!r}")
    for j, v in enumerate(row):
      if v is None:
        out[i, j] = math.nan
      elif isinstance(v, (int, float)) and not isinstance(v, bool):
        out[i, j] = float(v)
      else:
        raise DatasetError(f"{path}: `{key}`[{i}][{j}] is not a number: {v!r}")
  return out


def read_json_poses(path: str) -> np.ndarray:
  """(N, 4, 4) camera-to-world matrices of a `poses` index file."""
  data = _load(path)
  if "poses" not in data:
    raise DatasetError(f"{path}: no `poses` key (keys: {sorted(data)})")
  return matrix_from_pose7(_rows(path, data, "poses", 7))


def read_json_index(path: str, root: str, ground_axes: tuple[int, int] = (0, 1)) -> ImageTable:
  """Reads an index file into an ImageTable whose paths are relative to `root`.

  Args:
    path: the JSON file (local or gs://).
    root: dataset root that `im_paths` are relative to (the file's `im_prefix` is ignored, as by
      the authors' loaders).
    ground_axes: for `poses` files, the world axes used as (east, north).

  Returns:
    The table: keys = file stems; `loc` -> utm = (E, N), heading = ca mod 360 (null -> NaN);
    `poses` -> utm = translation on `ground_axes`, heading of the viewing direction. pano and
    night are False (not stored in index files: mask MSLS panoramas with the MSLS reader).

  Raises:
    DatasetError: naming the file, key and row at fault.
  """
  data = _load(path)
  im_paths = data["im_paths"]
  n = len(im_paths)
  if "loc" in data:
    loc = _rows(path, data, "loc", 3)
    bad = np.flatnonzero(~np.all(np.isfinite(loc[:, :2]), axis=1))
    if len(bad):
      raise DatasetError(
          f"{path}: `loc`[{bad[0]}] has a non-finite position {loc[bad[0]].tolist()}")
    utm, heading = loc[:, :2], np.mod(loc[:, 2], 360.0)
  elif "poses" in data:
    poses = matrix_from_pose7(_rows(path, data, "poses", 7))
    a, b = ground_axes
    utm = np.stack([poses[:, a, 3], poses[:, b, 3]], -1)
    heading = heading_from_rotation(poses[:, :3, :3], ground_axes)
  else:
    raise DatasetError(f"{path}: neither `loc` nor `poses` present (keys: {sorted(data)})")
  name = os.path.splitext(os.path.basename(path))[0]
  return ImageTable(
      root=root,
      name=name,
      paths=np.array(im_paths, dtype=str).reshape(n),
      keys=np.array([os.path.splitext(os.path.basename(p))[0] for p in im_paths], dtype=str
                    ).reshape(n),
      utm=utm.reshape(n, 2),
      heading=heading.reshape(n),
      pano=np.zeros(n, bool),
      night=np.zeros(n, bool),
      in_all=np.ones(n, bool),
  )


def _num(x: float) -> float | None:
  return None if not math.isfinite(x) else float(x)


def write_json_index(table: ImageTable, path: str, *, im_prefix: str | None = None,
                     ca: np.ndarray | None = None, poses: np.ndarray | None = None) -> dict:
  """Writes an index file in the authors' format; returns the written dict.

  Args:
    table: the image set (row order kept).
    path: output JSON file.
    im_prefix: stored `im_prefix` (default: the table root with a trailing '/').
    ca: third `loc` column; default the table heading (NaN, e.g. MSLS panoramas, written as null).
      The authors store MSLS raw.csv `ca` as is, panoramas included: see `msls_json_index`.
    poses: (N, 4, 4) camera-to-world matrices: writes `poses` 7-vectors instead of `loc`.
  """
  n = len(table)
  data = {"im_prefix": table.root.rstrip("/") + "/" if im_prefix is None else im_prefix,
          "im_paths": [str(p) for p in table.paths]}
  if poses is not None:
    poses = np.asarray(poses, np.float64)
    if poses.shape != (n, 4, 4):
      raise ValueError(f"{path}: poses must have shape ({n}, 4, 4), got {poses.shape}")
    data["poses"] = [[float(v) for v in pose7_from_matrix(p)] for p in poses]
  else:
    third = table.heading if ca is None else np.asarray(ca, np.float64)
    if third.shape != (n,):
      raise ValueError(f"{path}: ca must have shape ({n},), got {third.shape}")
    data["loc"] = [[float(e), float(nn), _num(c)] for (e, nn), c in zip(table.utm, third)]
  parent = os.path.dirname(path)
  if parent and not gcl_io.exists(parent):
    gcl_io.makedirs(parent)
  with gcl_io.open(path, "w") as f:
    json.dump(data, f)
  return data


def msls_raw_ca(root: str, city: str, side: str, split: str = "train_val") -> np.ndarray:
  """The raw.csv `ca` column as floats (panoramas included), CSV order."""
  raw_path = f"{root.rstrip('/')}/{split}/{city}/{side}/raw.csv"
  cols = msls.read_csv(raw_path, ("key", "ca"))
  out = np.empty(len(cols["ca"]), np.float64)
  for i, v in enumerate(cols["ca"]):
    try:
      out[i] = float(v)
    except ValueError:
      raise DatasetError(f"{raw_path}:{i + 2}: column `ca` is not a number: {v!r}") from None
  return out


def write_msls_json_index(root: str, city: str, side: str, path: str | None = None,
                          split: str = "train_val", im_prefix: str | None = None) -> dict:
  """The authors' `get_city_idx`: `<root>/<split>/<city>/<side>.json` from the MSLS CSVs.

  `loc` = [postprocessed easting, northing, raw.csv ca] in CSV order, exactly as upstream
  (the compass angle of panoramas is kept, not NaN). Unlike upstream, image existence is not
  checked (use `msls.check_images_exist`) and single-row cities work.
  """
  table = msls.read_msls_side(root, city, side, split)
  ca = msls_raw_ca(root, city, side, split)
  if path is None:
    path = f"{root.rstrip('/')}/{split}/{city}/{side}.json"
  return write_json_index(table, path, im_prefix=im_prefix, ca=ca)

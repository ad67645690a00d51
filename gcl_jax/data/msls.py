"""Reader for the Mapillary Street-Level Sequences (MSLS) on-disk layout.

    <root>/train_val/<city>/{query,database}/images/<key>.jpg
    <root>/train_val/<city>/{query,database}/raw.csv            ,key,lon,lat,ca,captured_at,pano
    <root>/train_val/<city>/{query,database}/postprocessed.csv  ,key,easting,northing,unique_cluster,
                                                                 control_panel,night,view_direction
    <root>/train_val/<city>/{query,database}/subtask_index.csv  ,key,all,s2w,w2s,o2n,n2o,d2n,n2d
    <root>/train_val/<city>/{query,database}/seq_info.csv       ,key,sequence_key,frame_number

Row order is the CSV order (the authors' label matrices rely on it).
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import tensorflow as tf

from gcl_jax.data.table import ImageTable

TRAIN_CITIES = ("trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo",
                "toronto", "saopaulo", "moscow", "zurich", "paris", "bangkok", "budapest", "austin",
                "berlin", "ottawa", "phoenix", "goa", "amman", "nairobi", "manila")
VAL_CITIES = ("cph", "sf")
TEST_CITIES = ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala")

_BOOL = {"true": True, "false": False, "1": True, "0": False}


class DatasetError(ValueError):
  """Raised for malformed dataset files; the message names the file, row and column."""


def read_csv(path: str, required: tuple[str, ...]) -> dict[str, list[str]]:
  """Reads a CSV with a header into columns; raises DatasetError naming missing columns."""
  if not tf.io.gfile.exists(path):
    raise DatasetError(f"{path}: file not found")
  with tf.io.gfile.GFile(path, "r") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise DatasetError(f"{path}: empty file (no header)")
  header = [h.strip() for h in rows[0]]
  missing = [c for c in required if c not in header]
  if missing:
    raise DatasetError(f"{path}: missing column(s) {missing}; header is {header}")
  cols = {c: [] for c in header}
  for line_no, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != len(header):
      raise DatasetError(f"{path}:{line_no}: {len(row)} fields, header has {len(header)}")
    for c, v in zip(header, row):
      cols[c].append(v.strip())
  return cols


def _floats(path: str, cols: dict[str, list[str]], name: str, allow_nan: bool = False) -> np.ndarray:
  out = np.empty(len(cols[name]), np.float64)
  for i, v in enumerate(cols[name]):
    if allow_nan and not v:  # empty cell = missing value; the caller decides if that is allowed.
      out[i] = math.nan
      continue
    try:
      out[i] = float(v)
    except ValueError:
      raise DatasetError(f"{path}:{i + 2}: column `{name}` is not a number: {v!r}") from None
    if not allow_nan and not math.isfinite(out[i]):
      raise DatasetError(f"{path}:{i + 2}: column `{name}` is not finite: {v!r}")
  return out


def _bools(path: str, cols: dict[str, list[str]], name: str) -> np.ndarray:
  out = np.empty(len(cols[name]), bool)
  for i, v in enumerate(cols[name]):
    if v.lower() not in _BOOL:
      raise DatasetError(f"{path}:{i + 2}: column `{name}` is not a boolean: {v!r}")
    out[i] = _BOOL[v.lower()]
  return out


def _check_keys(path_a: str, keys_a: list[str], path_b: str, keys_b: list[str]) -> None:
  if len(keys_a) != len(keys_b):
    raise DatasetError(f"{path_b}: {len(keys_b)} rows but {path_a} has {len(keys_a)}")
  for i, (a, b) in enumerate(zip(keys_a, keys_b)):
    if a != b:
      raise DatasetError(f"{path_b}:{i + 2}: key {b!r} does not match {path_a}:{i + 2} key {a!r}")


def read_msls_side(root: str, city: str, side: str, split: str = "train_val") -> ImageTable:
  """Reads one side ("query" or "database") of one MSLS city into an ImageTable."""
  if side not in ("query", "database"):
    raise ValueError(f"side must be 'query' or 'database', got {side!r}")
  base = f"{root.rstrip('/')}/{split}/{city}/{side}"
  if not tf.io.gfile.isdir(base):
    raise DatasetError(f"{base}: directory not found (city {city!r}, split {split!r})")
  raw_path = f"{base}/raw.csv"
  post_path = f"{base}/postprocessed.csv"
  sub_path = f"{base}/subtask_index.csv"
  raw = read_csv(raw_path, ("key", "ca", "pano"))
  post = read_csv(post_path, ("key", "easting", "northing", "night"))
  keys = raw["key"]
  if not keys:
    raise DatasetError(f"{raw_path}: no images (empty city side)")
  if len(set(keys)) != len(keys):
    dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
    raise DatasetError(f"{raw_path}: duplicated keys {dup}")
  _check_keys(raw_path, keys, post_path, post["key"])
  if tf.io.gfile.exists(sub_path):
    sub = read_csv(sub_path, ("key", "all"))
    _check_keys(raw_path, keys, sub_path, sub["key"])
    in_all = _bools(sub_path, sub, "all")
  else:
    in_all = np.ones(len(keys), bool)
  pano = _bools(raw_path, raw, "pano")
  heading = _floats(raw_path, raw, "ca", allow_nan=True)
  bad = np.flatnonzero(~np.isfinite(heading) & ~pano)
  if len(bad):
    i = int(bad[0])
    raise DatasetError(f"{raw_path}:{i + 2}: key {keys[i]!r} has no finite compass angle `ca` "
                       f"({raw['ca'][i]!r}) and is not a panorama")
  heading = np.where(pano, np.nan, np.mod(heading, 360.0))
  utm = np.stack([_floats(post_path, post, "easting"), _floats(post_path, post, "northing")], -1)
  return ImageTable(
      root=root,
      name=f"{split}/{city}/{side}",
      paths=np.array([f"{split}/{city}/{side}/images/{k}.jpg" for k in keys]),
      keys=np.array(keys),
      utm=utm,
      heading=heading,
      pano=pano,
      night=_bools(post_path, post, "night"),
      in_all=in_all,
  )


def read_msls_city(root: str, city: str, split: str = "train_val") -> tuple[ImageTable, ImageTable]:
  """Returns (query, database) tables of one city."""
  return read_msls_side(root, city, "query", split), read_msls_side(root, city, "database", split)


def check_images_exist(table: ImageTable) -> None:
  """Raises DatasetError naming the first missing image file."""
  for p in table.full_paths():
    if not tf.io.gfile.exists(p):
      raise DatasetError(f"{p}: image file not found (listed in {table.name}/raw.csv)")

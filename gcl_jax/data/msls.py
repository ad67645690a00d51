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

from gcl_jax import io as gcl_io
from gcl_jax.types import DatasetError, ImageTable

TRAIN_CITIES = ("trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo",
                "toronto", "saopaulo", "moscow", "zurich", "paris", "bangkok", "budapest", "austin",
                "berlin", "ottawa", "phoenix", "goa", "amman", "nairobi", "manila")
VAL_CITIES = ("cph", "sf")
TEST_CITIES = ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala")

_BOOL = {"true": True, "false": False, "1": True, "0": False}


def read_csv(path: str, required: tuple[str, ...]) -> dict[str, list[str]]:
  """Reads a CSV with a header into columns; raises DatasetError naming missing columns."""
  if not gcl_io.exists(path):
    raise DatasetError(f"{path}: file not found")
  with gcl_io.open(path, "r") as f:
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


def list_cities(root: str, split: str = "train_val") -> list[str]:
  """Sorted names of the city folders under `<root>/<split>` that have a `query` folder.

  Raises:
    FileNotFoundError: if `<root>/<split>` is not a directory.
  """
  base = f"{root.rstrip('/')}/{split}"
  if not gcl_io.isdir(base):
    raise FileNotFoundError(f"{base}: directory not found (dataset root {root!r}, split {split!r})")
  names = [n.rstrip("/") for n in gcl_io.listdir(base)]
  return sorted(n for n in names if gcl_io.isdir(f"{base}/{n}/query"))


def read_msls_side(root: str, city: str, side: str, split: str = "train_val") -> ImageTable:
  """Reads one side ("query" or "database") of one MSLS city into an ImageTable."""
  if side not in ("query", "database"):
    raise ValueError(f"side must be 'query' or 'database', got {side!r}")
  base = f"{root.rstrip('/')}/{split}/{city}/{side}"
  if not gcl_io.isdir(base):
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
  if gcl_io.exists(sub_path):
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
    if not gcl_io.exists(p):
      raise DatasetError(f"{p}: image file not found (listed in {table.name}/raw.csv)")


SUBTASKS = ("s2w", "w2s", "o2n", "n2o", "d2n", "n2d")
"""The MSLS subtasks of subtask_index.csv besides `all`."""


def _fmt_float(x: float, decimals: int | None) -> str:
  """`x` with `decimals` digits after the point, or its shortest exact form (repr) for None."""
  return repr(float(x)) if decimals is None else f"{float(x):.{decimals}f}"


def _csv_text(header: str, rows: list[list[str]]) -> str:
  """An MSLS CSV: the header, then one line per row led by its 0-based index."""
  return "".join([header + "\n"] + [",".join([str(i)] + r) + "\n" for i, r in enumerate(rows)])


def _check_columns(table: ImageTable, columns: dict) -> None:
  """Raises ValueError naming the first given column whose length is not the table's."""
  for name, values in columns.items():
    if values is not None and len(values) != len(table):
      raise ValueError(f"write_msls_side({table.name}): `{name}` has {len(values)} rows, the "
                       f"table has {len(table)}")


def write_msls_side(root: str, city: str, side: str, table: ImageTable, *,
                    split: str = "train_val", lon_lat: np.ndarray | None = None,
                    captured_at=None, unique_cluster=None, view_direction=None,
                    sequence_key=None, frame_number=None, subtasks=None,
                    decimals: dict[str, int] | None = None) -> None:
  """Writes one side of an MSLS city: the CSV files that `read_msls_side` reads back.

  `<root>/<split>/<city>/<side>/{raw,postprocessed,subtask_index}.csv` (and `seq_info.csv` when
  sequences are given), plus an empty `images/` folder; the images themselves are the caller's.
  Rows follow the table's order. Headings are written modulo 360 (NaN as 0: panoramas);
  `subtask_index.csv` takes `all` from `table.in_all`.

  Args:
    root: dataset root (local path or URL).
    city: city name.
    side: "query" or "database".
    table: keys, UTM coordinates, headings, pano and night flags of the images (`paths` and
      `root` are not written).
    split: MSLS split folder.
    lon_lat: (N, 2) longitude, latitude in degrees; default 0.
    captured_at: (N,) integer capture times (ms since the epoch); default 0.
    unique_cluster: (N,) integer cluster ids of postprocessed.csv; default 0.
    view_direction: (N,) "Forward", "Backward" or "Sideways"; default "Forward".
    sequence_key: (N,) sequence key of each image; with `frame_number`, writes seq_info.csv.
    frame_number: (N,) frame number of each image within its sequence.
    subtasks: {subtask: (N,) bool} for names in SUBTASKS; missing subtasks are all False.
    decimals: digits after the point of "lon_lat", "ca" (compass angle) and "utm"; a missing key
      writes that column's shortest exact form (repr).

  Raises:
    ValueError: a bad side or subtask name, a column whose length differs from the table's, or
      only one of `sequence_key` and `frame_number`.
  """
  if side not in ("query", "database"):
    raise ValueError(f"side must be 'query' or 'database', got {side!r}")
  _check_columns(table, {"lon_lat": lon_lat, "captured_at": captured_at,
                         "unique_cluster": unique_cluster, "view_direction": view_direction,
                         "sequence_key": sequence_key, "frame_number": frame_number})
  if (sequence_key is None) != (frame_number is None):
    raise ValueError(f"write_msls_side({table.name}): give both sequence_key and frame_number "
                     "(seq_info.csv) or neither")
  subtasks = dict(subtasks or {})
  unknown = sorted(set(subtasks) - set(SUBTASKS))
  if unknown:
    raise ValueError(f"write_msls_side({table.name}): unknown subtask(s) {unknown}; known: "
                     f"{SUBTASKS}")
  _check_columns(table, {f"subtasks[{name!r}]": v for name, v in subtasks.items()})
  dec = dict(decimals or {})
  n = len(table)
  base = f"{root.rstrip('/')}/{split}/{city}/{side}"
  gcl_io.makedirs(f"{base}/images")
  raw, post, sub = [], [], []
  for i, key in enumerate(table.keys):
    h = float(table.heading[i])
    h = h if math.isfinite(h) else 0.0
    ca = (h if dec.get("ca") is None else round(h, dec["ca"])) % 360.0  # Never "360.0000".
    lon, lat = (0.0, 0.0) if lon_lat is None else lon_lat[i]
    time_ms = 0 if captured_at is None else int(captured_at[i])
    raw.append([str(key), _fmt_float(lon, dec.get("lon_lat")),
                _fmt_float(lat, dec.get("lon_lat")), _fmt_float(ca, dec.get("ca")), str(time_ms),
                str(bool(table.pano[i]))])
    cluster = 0 if unique_cluster is None else int(unique_cluster[i])
    view = "Forward" if view_direction is None else str(view_direction[i])
    post.append([str(key), _fmt_float(table.utm[i, 0], dec.get("utm")),
                 _fmt_float(table.utm[i, 1], dec.get("utm")), str(cluster), "False",
                 str(bool(table.night[i])), view])
    sub.append([str(key), str(bool(table.in_all[i]))] +
               [str(bool(subtasks[s][i])) if s in subtasks else "False" for s in SUBTASKS])
  gcl_io.atomic_write(f"{base}/raw.csv", _csv_text(",key,lon,lat,ca,captured_at,pano", raw))
  gcl_io.atomic_write(f"{base}/postprocessed.csv", _csv_text(
      ",key,easting,northing,unique_cluster,control_panel,night,view_direction", post))
  if sequence_key is not None:
    seq = [[str(table.keys[i]), str(sequence_key[i]), str(int(frame_number[i]))] for i in range(n)]
    gcl_io.atomic_write(f"{base}/seq_info.csv", _csv_text(",key,sequence_key,frame_number", seq))
  gcl_io.atomic_write(f"{base}/subtask_index.csv",
                      _csv_text(",key,all," + ",".join(SUBTASKS), sub))


def write_msls_city(root: str, city: str, query: ImageTable, database: ImageTable, *,
                    split: str = "train_val") -> None:
  """Writes two tables as an MSLS-layout city (CSV files only, no images).

  `<root>/<split>/<city>/{query,database}/` with the columns `read_msls_city` reads; lon/lat and
  capture times are written as 0 and coordinates and headings exactly (repr).
  """
  write_msls_side(root, city, "query", query, split=split)
  write_msls_side(root, city, "database", database, split=split)

"""On-disk storage of PairTable label files, and a per-city label cache.

Label file (`save_pair_table` / `load_pair_table`): one uncompressed NumPy `.npz` archive, read with
`allow_pickle=False`, holding

    format            0-d str    "gcl_jax.PairTable"
    format_version    0-d int64  1
    num_queries       0-d int64
    num_database      0-d int64
    indptr            (num_queries + 1,) int64   CSR row pointer: pairs of query q are
                                                 rows indptr[q]:indptr[q+1]
    db_idx            (P,) int32     database index, ascending within a query
    psi               (P,) float32   graded FoV label in [0, 1]
    sim               (P,) int8      1 positive, 0 negative, -1 ambiguous
    dist              (P,) float32   camera-centre distance in metres
    params_json       0-d str        JSON object of PairTable.params

(see gcl_jax/labels/table.py for the meaning of the fields). Files are written atomically with
`gcl_jax.io.atomic_write_with` (locally: a temporary file in the destination directory, fsync'ed
and renamed over the target; in a bucket: one upload), so a reader never sees a partially written
file. Every path may be local or a URL (gs://...): all access goes through `gcl_jax.io`.

City cache (`label_city_cached`): `<out_dir>/<city>_fov.npz` (a label file as above) plus
`<out_dir>/<city>_fov.manifest.json`:

    {"format": "gcl_jax.fov_manifest", "format_version": 1, "city": <city>,
     "label_file": "<city>_fov.npz", "params": {... PairTable.params ...},
     "inputs_sha256": <hex digest>, "num_queries": int, "num_database": int, "num_pairs": int}

`inputs_sha256` hashes, for the query then the database table, the shape, dtype and bytes of
`utm` (float64), `heading` (float64, NaNs canonicalised) and `pano` (bool), and the image keys
(UTF-8, length-prefixed). The cached file is reused only when the manifest's params, input hash
and sizes all equal the current ones and the label file loads with the same params; otherwise
labels are recomputed and both files rewritten (the old manifest is deleted first, so an
interrupted rewrite can never leave a manifest that vouches for a different label file).

6-DoF cache (`label_pose3d_cached`, 3-D overlap labels of `gcl_jax.labels.pose3d`): the same pair of
files, `<out_dir>/<name>_pose3d.npz` and `<out_dir>/<name>_pose3d.manifest.json`, with manifest
format "gcl_jax.pose3d_manifest" and `num_queries` = `num_database` = the number of frames.
Its `inputs_sha256` hashes the poses ((N, 4, 4) float64 bytes), the frame keys (UTF-8,
length-prefixed) and, when depth maps are used, the bytes of every depth file in order; the depth
maps are decoded only when the labels are (re)computed.
"""

from __future__ import annotations

import hashlib
import io as io_lib
import json
import os
import zipfile
from typing import Any

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.types import ImageTable
from gcl_jax.labels import pose3d
from gcl_jax.labels.fov2d import city_pair_table, pair_table_params
from gcl_jax.types import PairTable, UserError

FORMAT = "gcl_jax.PairTable"
FORMAT_VERSION = 1
MANIFEST_FORMAT = "gcl_jax.fov_manifest"
MANIFEST_VERSION = 1
POSE3D_MANIFEST_FORMAT = "gcl_jax.pose3d_manifest"

_ARRAYS = {"indptr": np.int64, "db_idx": np.int32, "psi": np.float32, "sim": np.int8,
           "dist": np.float32}
_KEYS = ("format", "format_version", "num_queries", "num_database", *_ARRAYS, "params_json")
_CITY_PARAMS = ("radius_m", "fov_deg", "normalization", "cutoff_factor", "pos_dist_m",
                "neg_dist_m")


class LabelFileError(UserError, ValueError):
  """A label file or manifest is corrupt, incomplete or of an unknown format; names the file."""


def save_pair_table(path: str, table: PairTable) -> None:
  """Writes `table` to `path` (a single .npz, see the module docstring), atomically.

  Args:
    path: destination file (local or URL); the directory is created if needed. Conventionally
      ends in ".npz".
    table: the labels; `params` must be JSON-serialisable.

  Raises:
    TypeError: if `table.params` is not JSON-serialisable.
  """
  try:
    params_json = json.dumps(table.params, sort_keys=True)
  except TypeError as e:
    raise TypeError(f"PairTable.params must be JSON-serialisable to be saved to {path}: {e}") from e
  arrays = {k: np.ascontiguousarray(getattr(table, k), dtype=dt) for k, dt in _ARRAYS.items()}

  def write(f):
    np.savez(f, format=np.array(FORMAT), format_version=np.array(FORMAT_VERSION, np.int64),
             num_queries=np.array(table.num_queries, np.int64),
             num_database=np.array(table.num_database, np.int64), params_json=np.array(params_json),
             **arrays)

  gcl_io.atomic_write_with(path, write)


def load_pair_table(path: str) -> PairTable:
  """Reads a label file written by `save_pair_table`.

  Raises:
    FileNotFoundError: if `path` does not exist.
    LabelFileError: if the file is not a readable .npz, has an unknown format or version, lacks a
      key, or holds inconsistent arrays (the message names the file and the problem).
  """
  if not gcl_io.exists(path):
    raise FileNotFoundError(f"label file {path} does not exist")
  try:
    with np.load(io_lib.BytesIO(gcl_io.read_bytes(path)), allow_pickle=False) as z:
      missing = [k for k in _KEYS if k not in z.files]
      if missing:
        raise LabelFileError(f"label file {path}: missing key(s) {missing}; it has "
                             f"{sorted(z.files)}")
      data = {k: z[k] for k in _KEYS}
  except LabelFileError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise LabelFileError(f"label file {path} is corrupt or not an .npz archive: {e}") from e
  if str(data["format"]) != FORMAT:
    raise LabelFileError(f"label file {path}: format {str(data['format'])!r}, expected {FORMAT!r}")
  if int(data["format_version"]) != FORMAT_VERSION:
    raise LabelFileError(f"label file {path}: format_version {int(data['format_version'])}, this "
                         f"code reads version {FORMAT_VERSION}")
  try:
    params = json.loads(str(data["params_json"]))
  except json.JSONDecodeError as e:
    raise LabelFileError(f"label file {path}: params_json is not valid JSON: {e}") from e
  arrays = {}
  for k, dt in _ARRAYS.items():
    if data[k].dtype != dt:
      raise LabelFileError(f"label file {path}: `{k}` has dtype {data[k].dtype}, expected "
                           f"{np.dtype(dt)}")
    arrays[k] = data[k]
  try:
    table = PairTable(num_queries=int(data["num_queries"]), num_database=int(data["num_database"]),
                      params=params, **arrays)
  except ValueError as e:
    raise LabelFileError(f"label file {path}: inconsistent arrays: {e}") from e
  indptr = table.indptr
  if len(indptr) and (indptr[0] != 0 or np.any(np.diff(indptr) < 0)):
    raise LabelFileError(f"label file {path}: indptr must start at 0 and be non-decreasing")
  if table.num_pairs and (table.db_idx.min() < 0 or table.db_idx.max() >= table.num_database):
    raise LabelFileError(f"label file {path}: db_idx outside [0, {table.num_database})")
  return table


def _hash_table(h: "hashlib._Hash", table: ImageTable) -> None:
  """Feeds the label-relevant columns of `table` (utm, heading, pano, keys) into `h`."""
  heading = np.asarray(table.heading, np.float64).copy()
  heading[np.isnan(heading)] = np.nan  # one NaN bit pattern.
  for name, arr in (("utm", np.asarray(table.utm, np.float64)), ("heading", heading),
                    ("pano", np.asarray(table.pano, bool))):
    arr = np.ascontiguousarray(arr)
    h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
    h.update(arr.tobytes())
  h.update(f"keys:{len(table.keys)};".encode())
  for k in table.keys:
    b = str(k).encode("utf-8")
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)


def inputs_sha256(query: ImageTable, database: ImageTable) -> str:
  """SHA-256 (hex) of the label-relevant inputs of a city: see the module docstring."""
  h = hashlib.sha256()
  for side, table in (("query", query), ("database", database)):
    h.update(f"[{side}]".encode())
    _hash_table(h, table)
  return h.hexdigest()


def _read_manifest(path: str) -> dict[str, Any] | None:
  """The manifest at `path`, or None when it is missing or unreadable (then labels are redone)."""
  try:
    manifest = json.loads(gcl_io.read_text(path))
  except (OSError, ValueError):
    return None
  return manifest if isinstance(manifest, dict) else None


def label_city_cached(query: ImageTable, database: ImageTable, out_dir: str, city: str, *,
                      write: bool = True, **params: Any) -> PairTable:
  """`city_pair_table` with an on-disk cache keyed by the parameters and the input data.

  Args:
    query, database: the city's image tables.
    out_dir: cache directory (local or URL; created if needed).
    city: city name; files are `<out_dir>/<city>_fov.npz` and `<out_dir>/<city>_fov.manifest.json`.
    write: store a freshly computed table (False on all processes but one of a multi-process run:
      each computes the same table, one writes it).
    **params: keyword arguments of `city_pair_table` (radius_m, fov_deg, normalization,
      cutoff_factor, pos_dist_m, neg_dist_m); unspecified ones take its defaults.

  Returns:
    The cached table when the manifest matches the current parameters and inputs, otherwise a
    freshly computed one (which is then stored).

  Raises:
    TypeError: on an unknown parameter name.
    ValueError: on an invalid city name or parameter value.
  """
  unknown = sorted(set(params) - set(_CITY_PARAMS))
  if unknown:
    raise TypeError(f"label_city_cached: unknown parameter(s) {unknown}; expected some of "
                    f"{list(_CITY_PARAMS)}")
  _check_name(city, "city")
  # The params the table records (defaults filled in, validated), as they read back from JSON.
  return _cached(out_dir, city, "fov", MANIFEST_FORMAT, inputs_sha256(query, database),
                 {"num_queries": len(query), "num_database": len(database)},
                 pair_table_params(**params), lambda: city_pair_table(query, database, **params),
                 write)


def _check_name(name: str, what: str) -> None:
  if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
    raise ValueError(f"{what} must be a plain file-name component, got {name!r}")


def _cached(out_dir: str, name: str, suffix: str, manifest_format: str, digest: str,
            sizes: dict[str, int], params: dict, compute, write: bool = True) -> PairTable:
  """The table at `<out_dir>/<name>_<suffix>.npz` when its manifest vouches for these inputs and
  params; otherwise `compute()`, stored with a fresh manifest (see the module docstring)."""
  npz_path = gcl_io.join(out_dir, f"{name}_{suffix}.npz")
  manifest_path = gcl_io.join(out_dir, f"{name}_{suffix}.manifest.json")
  expected_params = json.loads(json.dumps(params, sort_keys=True))  # as read back from JSON
  manifest = _read_manifest(manifest_path)
  if (manifest is not None and manifest.get("format") == manifest_format
      and manifest.get("format_version") == MANIFEST_VERSION and manifest.get("city") == name
      and manifest.get("inputs_sha256") == digest and manifest.get("params") == expected_params
      and all(manifest.get(k) == v for k, v in sizes.items())):
    try:
      table = load_pair_table(npz_path)
    except (FileNotFoundError, LabelFileError):
      table = None
    if (table is not None and table.params == expected_params
        and table.num_queries == sizes["num_queries"]
        and table.num_database == sizes["num_database"]
        and manifest.get("num_pairs") == table.num_pairs):
      return table

  table = compute()
  if not write:
    return table
  gcl_io.remove(manifest_path, missing_ok=True)
  save_pair_table(npz_path, table)
  manifest = {"format": manifest_format, "format_version": MANIFEST_VERSION, "city": name,
              "label_file": gcl_io.path(npz_path).name, "params": table.params,
              "inputs_sha256": digest, **sizes, "num_pairs": table.num_pairs}
  text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
  gcl_io.atomic_write(manifest_path, text)
  return table


def pose3d_inputs_sha256(poses: np.ndarray, keys, depth_paths=None) -> str:
  """SHA-256 (hex) of the inputs of 6-DoF labels: poses, frame keys, depth file bytes."""
  h = hashlib.sha256()
  poses = np.ascontiguousarray(np.asarray(poses, np.float64))
  h.update(f"poses:{poses.dtype.str}:{poses.shape};".encode())
  h.update(poses.tobytes())
  h.update(f"keys:{len(keys)};".encode())
  for k in keys:
    b = str(k).encode("utf-8")
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)
  if depth_paths is not None:
    h.update(f"depths:{len(depth_paths)};".encode())
    for p in depth_paths:
      h.update(hashlib.sha256(gcl_io.read_bytes(p)).digest())
  return h.hexdigest()


def label_pose3d_cached(poses: np.ndarray, keys, out_dir: str, name: str, *,
                        intrinsics: pose3d.Intrinsics = pose3d.SEVEN_SCENES_DEPTH,
                        depth_paths=None, positive_above: float = 0.5,
                        symmetric: str | None = "mean", write: bool = True,
                        **overlap_kwargs: Any) -> PairTable:
  """`pose3d.pose_pair_table` over one set of frames, with an on-disk cache (module docstring).

  Args:
    poses: (N, 4, 4) camera-to-world poses of the frames.
    keys: the N frame keys (part of the cache key: reordered frames are relabelled).
    out_dir: cache directory (local or URL; created if needed).
    name: files are `<out_dir>/<name>_pose3d.npz` and `<out_dir>/<name>_pose3d.manifest.json`.
    intrinsics: the camera (and depth maps') intrinsics.
    depth_paths: None (frustum overlap) or N depth PNGs (16-bit millimetres, read with
      `pose3d.load_depth_png` only on a cache miss; the depth measure).
    positive_above, symmetric, **overlap_kwargs: as `pose3d.pose_pair_table` (overlap_kwargs:
      depth_tolerance_m, stride, near_m, max_range_m, num_depths).
    write: store a freshly computed table (as in `label_city_cached`).

  Returns:
    The cached table when the manifest matches the current parameters and inputs, otherwise a
    freshly computed one (which is then stored). The diagonal (a frame with itself) is not listed.

  Raises:
    TypeError: on an unknown overlap parameter.
    ValueError: on an invalid name, mismatched sizes or an invalid parameter value.
  """
  _check_name(name, "name")
  poses = np.asarray(poses, np.float64)
  n = len(poses)
  if poses.shape != (n, 4, 4):
    raise ValueError(f"label_pose3d_cached({name!r}): poses must have shape (N, 4, 4), got "
                     f"{poses.shape}")
  if len(keys) != n:
    raise ValueError(f"label_pose3d_cached({name!r}): {len(keys)} keys for {n} poses")
  if depth_paths is not None and len(depth_paths) != n:
    raise ValueError(f"label_pose3d_cached({name!r}): {len(depth_paths)} depth maps for {n} poses")
  params = pose3d.pose_pair_table_params(intrinsics, with_depths=depth_paths is not None,
                                         positive_above=positive_above, symmetric=symmetric,
                                         **overlap_kwargs)

  def compute() -> PairTable:
    depths = (None if depth_paths is None
              else [pose3d.load_depth_png(p) for p in depth_paths])
    return pose3d.pose_pair_table(poses, intrinsics, depths=depths, positive_above=positive_above,
                                  symmetric=symmetric, **overlap_kwargs)

  return _cached(out_dir, name, "pose3d", POSE3D_MANIFEST_FORMAT,
                 pose3d_inputs_sha256(poses, keys, depth_paths),
                 {"num_queries": n, "num_database": n}, params, compute, write)


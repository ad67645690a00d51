"""MSLS test cities, whose ground truth is withheld (GCL_REFERENCE 3.1).

    <root>/test/<city>/{query,database}/images/<key>.jpg
    <root>/test/<city>/{query,database}/seq_info.csv        ,key,sequence_key,frame_number
    <root>/test/<city>/{query,database}/subtask_index.csv   ,key,all,s2w,w2s,o2n,n2o,d2n,n2d

There is no raw.csv / postprocessed.csv: the table has NaN utm and heading (NOT a position: never
label or evaluate positions from it; MSLS-test recall is computed by the challenge server from a
prediction file), pano and night False (unknown). Row order is seq_info.csv order; when the
authors' downloaded `test/<city>/<side>.json` is given, its `im_paths` order is used instead and
checked against the CSV keys, so predictions line up with their files.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.data import msls
from gcl_jax.types import DatasetError
from gcl_jax.types import ImageTable

_log = logging.getLogger(__name__)


def read_msls_test_side(root: str, city: str, side: str, split: str = "test",
                        order_json: str | None = None) -> ImageTable:
  """Reads one side of an MSLS test city (no coordinates).

  Args:
    root: MSLS root.
    city: e.g. "miami".
    side: "query" or "database".
    split: folder holding the city ("test").
    order_json: optional authors' index file whose `im_paths` fix the row order.

  Returns:
    ImageTable with NaN utm/heading; name "<split>/<city>/<side>".

  Raises:
    DatasetError: missing files, duplicated keys, or keys that disagree between the files.
  """
  if side not in ("query", "database"):
    raise ValueError(f"side must be 'query' or 'database', got {side!r}")
  base = f"{root.rstrip('/')}/{split}/{city}/{side}"
  if not gcl_io.isdir(base):
    raise DatasetError(f"{base}: directory not found (city {city!r}, split {split!r})")
  seq_path, sub_path = f"{base}/seq_info.csv", f"{base}/subtask_index.csv"
  keys = msls.read_csv(seq_path, ("key",))["key"]
  if not keys:
    raise DatasetError(f"{seq_path}: no images (empty city side)")
  if len(set(keys)) != len(keys):
    dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
    raise DatasetError(f"{seq_path}: duplicated keys {dup}")
  in_all = np.ones(len(keys), bool)
  if gcl_io.exists(sub_path):
    sub = msls.read_csv(sub_path, ("key", "all"))
    pos = {k: i for i, k in enumerate(sub["key"])}
    missing = [k for k in keys if k not in pos]
    if missing or len(pos) != len(keys):
      raise DatasetError(f"{sub_path}: keys differ from {seq_path} (e.g. missing {missing[:3]}; "
                         f"{len(pos)} vs {len(keys)} rows)")
    flags = msls._bools(sub_path, sub, "all")  # pylint: disable=protected-access
    in_all = np.array([flags[pos[k]] for k in keys], bool)
  if order_json is not None:
    with gcl_io.open(order_json, "r") as f:
      im_paths = json.load(f)["im_paths"]
    order_keys = [os.path.splitext(os.path.basename(p))[0] for p in im_paths]
    pos = {k: i for i, k in enumerate(keys)}
    bad = [k for k in order_keys if k not in pos]
    if bad or len(order_keys) != len(keys):
      raise DatasetError(f"{order_json}: im_paths do not match {seq_path} (e.g. unknown key "
                         f"{bad[:1]}; {len(order_keys)} vs {len(keys)} rows)")
    perm = [pos[k] for k in order_keys]
    keys, in_all = order_keys, in_all[perm]
  n = len(keys)
  _log.info("%s: MSLS test city without coordinates: utm and heading are NaN", base)
  return ImageTable(
      root=root,
      name=f"{split}/{city}/{side}",
      paths=np.array([f"{split}/{city}/{side}/images/{k}.jpg" for k in keys]),
      keys=np.array(keys),
      utm=np.full((n, 2), np.nan),
      heading=np.full(n, np.nan),
      pano=np.zeros(n, bool),
      night=np.zeros(n, bool),
      in_all=in_all,
  )


def read_msls_any_city(root: str, city: str) -> tuple[ImageTable, ImageTable]:
  """(query, database) of any MSLS city: `test/` for the official test cities (no coordinates,
  see `read_msls_test_side`), else `train_val/` via `msls.read_msls_city`."""
  if city in msls.TEST_CITIES:
    return read_msls_test_side(root, city, "query"), read_msls_test_side(root, city, "database")
  return msls.read_msls_city(root, city)

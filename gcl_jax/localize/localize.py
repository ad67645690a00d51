"""--mode=localize: find where new photos were taken by searching them in a place index.

    python main.py --mode=localize --config=configs/demo.py --workdir=runs/demo/localized \\
        --config.localize.index=runs/demo/index --config.localize.images='photos/*.jpg'

The photos (config.localize.images: a directory, searched recursively for image files, a glob
pattern or one file; any size or aspect) are described with the index's own network and
preprocessing (recorded in the index, not taken from the current config), searched, and written
to the workdir by process 0:

    per_photo/<name>.csv   the top-k database images, best first: rank, key, city, distance
                           (squared L2), east, north (UTM metres), heading, weight (its share of
                           the weighted estimate), path; then two rows with rank "top1" and
                           "weighted_mean" holding the estimated position (east, north).
    per_photo/<name>.png   the photo, its top-5 matches and their positions on a map.
    localized.csv          one row per photo: its estimates and best match.
    unreadable.txt         photos that could not be read (also logged), skipped.

<name> is the photo's path relative to the directory (or to the pattern's fixed prefix) without
its extension, '/' replaced by '__'. The top-1 estimate is the best match's position; the
weighted mean weighs the k matches' positions by 1 / (distance + 1e-6).
"""

from __future__ import annotations

import csv
import io as _io
import os
import time
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from gcl_jax import io, parallel
from gcl_jax.localize import index as index_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CSV_COLUMNS = ("rank", "key", "city", "distance", "east", "north", "heading", "weight", "path")
SUMMARY_COLUMNS = ("photo", "name", "top1_east", "top1_north", "weighted_east", "weighted_north",
                   "top1_key", "top1_distance")


def list_photos(spec: str) -> tuple[list[str], str]:
  """(photo paths, base) of a directory (recursive, image extensions), a glob pattern or a file;
  `base` is what output names are made relative to."""
  if not spec:
    raise index_lib.LocalizeConfigError(
        "--mode=localize needs config.localize.images (a directory, a glob pattern such as "
        "'photos/*.jpg', or one file)")
  if any(c in spec for c in "*?["):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    paths = sorted(tf.io.gfile.glob(spec))
    fixed = spec[:min(spec.index(c) for c in "*?[" if c in spec)]
    base = fixed if fixed.endswith("/") else os.path.dirname(fixed)
    if not paths:
      raise FileNotFoundError(f"config.localize.images={spec!r} matches no file")
    return paths, base
  if io.isdir(spec):
    paths = sorted(io.join(d, f) for d, _, files in io.walk(spec) for f in files
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
      raise FileNotFoundError(f"config.localize.images={spec!r}: no image files "
                              f"({', '.join(IMAGE_EXTENSIONS)}) in that directory")
    return paths, spec
  if io.exists(spec):
    return [spec], os.path.dirname(spec)
  raise FileNotFoundError(f"config.localize.images={spec!r}: no such file or directory")


def output_names(paths: Sequence[str], base: str) -> list[str]:
  """Unique file-name stems of the photos (relative path, extension dropped, '/' -> '__')."""
  base = base.rstrip("/")
  names, seen = [], {}
  for p in paths:
    rel = p[len(base) + 1:] if base and p.startswith(base + "/") else os.path.basename(p)
    stem = os.path.splitext(rel)[0].replace("/", "__") or "photo"
    n = seen.get(stem, 0)
    seen[stem] = n + 1
    names.append(stem if n == 0 else f"{stem}_{n}")
  return names


def readable(paths: Sequence[str], preprocessing: dict) -> tuple[list[str], list[tuple[str, str]]]:
  """(readable photos, [(unreadable photo, reason)]) under the index's preprocessing."""
  from gcl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  good, bad = [], []
  for p in paths:
    msg = pipeline.check_file(p, (8, 8), preprocessing["resize_method"])
    if msg is None:
      good.append(p)
    else:
      bad.append((p, msg))
  return good, bad


def photo_csv(matches: index_lib.Matches, row: int, cities: np.ndarray) -> str:
  """The per-photo CSV text of row `row` of `matches` (columns CSV_COLUMNS + estimate rows)."""
  out = _io.StringIO()
  w = csv.writer(out, lineterminator="\n")
  w.writerow(CSV_COLUMNS)
  weights = matches.weights()[row]
  for r in range(matches.indices.shape[1]):
    i = int(matches.indices[row, r])
    if i < 0:
      w.writerow([r + 1, "", "", "", "", "", "", 0.0, ""])
      continue
    east, north = matches.positions[row, r]
    w.writerow([r + 1, matches.keys[row, r], cities[i], repr(float(matches.distances[row, r])),
                repr(float(east)), repr(float(north)), repr(float(matches.headings[row, r])),
                repr(float(weights[r])), matches.paths[row, r]])
  for name, est in (("top1", matches.estimate_top1()[row]),
                    ("weighted_mean", matches.estimate_weighted()[row])):
    w.writerow([name, "", "", "", repr(float(est[0])), repr(float(est[1])), "", "", ""])
  return out.getvalue()


def read_photo_csv(path: str) -> dict:
  """{"keys": [...], "distances": [...], "positions": (k, 2), "top1": (2,), "weighted_mean": (2,)}
  of a per-photo CSV."""
  rows = list(csv.DictReader(_io.StringIO(io.read_text(path))))
  ranked = [r for r in rows if r["rank"].isdigit()]
  est = {r["rank"]: np.array([float(r["east"]), float(r["north"])]) for r in rows
         if not r["rank"].isdigit()}
  return {"keys": [r["key"] for r in ranked],
          "distances": [float(r["distance"]) if r["distance"] else np.inf for r in ranked],
          "positions": np.array([[float(r["east"] or "nan"), float(r["north"] or "nan")]
                                 for r in ranked]).reshape(-1, 2),
          "top1": est.get("top1"), "weighted_mean": est.get("weighted_mean")}


def localize(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """--mode=localize: localizes config.localize.images in config.localize.index; writes the
  per-photo CSVs and pictures, localized.csv and unreadable.txt to `workdir`.

  Returns:
    {"localized": number of photos localized, "unreadable": [names], "index": directory,
     "outputs": workdir}.
  """
  from gcl_jax.localize import describe as describe_lib  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  loc = config.localize
  if not loc.index:
    raise index_lib.LocalizeConfigError("--mode=localize needs config.localize.index (a directory "
                                        "written by --mode=export)")
  if isinstance(loc.k, bool) or not isinstance(loc.k, int) or loc.k < 1:
    raise index_lib.LocalizeConfigError(f"config.localize.k must be a positive integer, got "
                                        f"{loc.k!r}")
  index = index_lib.load_index(loc.index)
  paths, base = list_photos(loc.images)
  good, bad = readable(paths, index.preprocessing)
  for p, msg in bad:
    logging.warning("unreadable photo skipped: %s (%s)", p, msg)
  if parallel.is_chief():
    io.makedirs(workdir)
    io.atomic_write(io.join(workdir, "unreadable.txt"),
                    "".join(f"{p}\t{msg}\n" for p, msg in bad))
  summary = {"localized": len(good), "unreadable": [p for p, _ in bad], "index": loc.index,
             "outputs": workdir}
  if not good:
    logging.warning("none of the %d photos could be read; nothing localized", len(paths))
    return summary
  embedder = describe_lib.Embedder.from_index(index)
  desc = embedder.describe_paths(good, batch_size=loc.batch_size, desc="localize")
  matches = index.search_descriptors(desc, loc.k)
  if not parallel.is_chief():
    return summary
  names = output_names(good, base)
  top1, weighted = matches.estimate_top1(), matches.estimate_weighted()
  rows = []
  for row, (photo, name) in enumerate(tqdm(list(zip(good, names)), desc="localize outputs",
                                           unit="photo")):
    io.atomic_write(io.join(workdir, "per_photo", f"{name}.csv"),
                    photo_csv(matches, row, index.cities))
    if loc.pictures:
      from gcl_jax.localize import plot  # pylint: disable=g-import-not-at-top
      plot.plot_localization(photo, matches, row, index,
                             io.join(workdir, "per_photo", f"{name}.png"))
    rows.append([photo, name, top1[row, 0], top1[row, 1], weighted[row, 0], weighted[row, 1],
                 matches.keys[row, 0], float(matches.distances[row, 0])])
  out = _io.StringIO()
  w = csv.writer(out, lineterminator="\n")
  w.writerow(SUMMARY_COLUMNS)
  for r in rows:
    w.writerow([r[0], r[1], *[repr(float(v)) for v in r[2:6]], r[6], repr(r[7])])
  io.atomic_write(io.join(workdir, "localized.csv"), out.getvalue())
  logging.info("localized %d photos (%d unreadable) in %s with %s in %.1f s; results in %s",
               len(good), len(bad), loc.images, index, time.time() - t0, workdir)
  return summary

"""Writing the synthetic world to disk in the MSLS layout, once, atomically.

    root/world.json                                   format version, config, sizes; written last
    root/train_val/<city>/{query,database}/images/<key>.jpg
    root/train_val/<city>/{query,database}/{raw,postprocessed,seq_info,subtask_index}.csv

The CSV files are written by `gcl_jax.data.msls.write_msls_side` and read back by
`gcl_jax.data.msls.read_msls_city`. The world is built in a uniquely named temporary sibling of
`root` and renamed into place, so generators running at the same time (on one host or on several
hosts sharing a file system) never see a half-written world. Object stores (a `root` URL such as
gs://bucket/world) cannot rename directories: there the world is rendered into a local temporary
directory and uploaded through `gcl_jax.io` file by file, world.json last, so world.json alone
says that the world is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
import zlib

import numpy as np
from PIL import Image

from gcl_jax import io as gcl_io
from gcl_jax.data.msls import write_msls_side
from gcl_jax.labels.utm import utm_to_latlon
from gcl_jax.synthetic.common import UTM_ZONE, random_keys, seeded_rng
from gcl_jax.synthetic.layout import (Camera, City, Traversal, WorldConfig, build_city, plan_city,
                                     traversal_cameras)
from gcl_jax.synthetic.render import Condition, make_condition, make_transients, render_view
from gcl_jax.types import ImageTable

FORMAT_VERSION = 1
_MARKER = "world.json"
# A temporary sibling in which nothing changed for this long belongs to a generator that died.
_ABANDONED_AFTER_S = 24 * 3600.0
# Digits after the point in the CSV files (lon/lat in degrees, compass angle, UTM metres).
_DECIMALS = {"lon_lat": 8, "ca": 4, "utm": 3}


@dataclasses.dataclass(frozen=True)
class _Frame:
  """One rendered image and what its CSV rows record."""

  key: str
  seq_key: str
  number: int  # Frame number within its traversal.
  cam: Camera
  seq: Traversal
  cond: Condition
  captured_at: int  # ms since the epoch


def _render_traversal(config: WorldConfig, city: City, qi: int, seq: Traversal,
                      key_rng: np.random.Generator, out_dir: str, used_keys: set,
                      progress_bar) -> list[_Frame]:
  """Renders and saves the frames of traversal number `qi` of `city`."""
  srng = seeded_rng(config.seed, city.name, "sequence", qi)
  cond = make_condition(seq.condition, int(srng.integers(0, 2 ** 31)),
                        int(srng.integers(0, config.epochs)))
  cams = traversal_cameras(config, city, seq, srng)
  tr = make_transients(city, city.streets[seq.street], seq.lateral, config.occluder_density, srng)
  seq_key = random_keys(key_rng, 1)[0]
  keys = random_keys(key_rng, len(cams))
  base_time = 1_400_000_000_000 + (zlib.crc32(city.name.encode()) % 1000) * 86_400_000
  t0 = base_time + qi * 3_600_000 + (0 if seq.side == "database" else 365 * 86_400_000)
  frames = []
  for k, (cam, key) in enumerate(zip(cams, keys)):
    if key in used_keys or seq_key in used_keys:
      raise RuntimeError("random key collision; change the seed")
    used_keys.add(key)
    img = render_view(city, cam, cond, config.image_height, config.image_width,
                      transients=tr, supersample=config.supersample, seed=k)
    path = os.path.join(out_dir, "train_val", city.name, seq.side, "images", key + ".jpg")
    Image.fromarray(img).save(path, format="JPEG", quality=config.jpeg_quality)
    frames.append(_Frame(key, seq_key, k, cam, seq, cond, t0 + k * 1000))
    if progress_bar is not None:
      progress_bar.update(1)
  used_keys.add(seq_key)
  return frames


def _write_side(out_dir: str, city: City, side: str, frames: list[_Frame]) -> None:
  """Writes the CSV files of one side of `city` through the MSLS writer."""
  if not frames:
    raise ValueError(f"city {city.name!r} has no {side} images (query_sequences = 0?)")
  east = np.array([city.origin[0] + fr.cam.x for fr in frames])
  north = np.array([city.origin[1] + fr.cam.y for fr in frames])
  lat, lon = utm_to_latlon(east, north, UTM_ZONE, True)
  is_q = side == "query"
  table = _side_table(out_dir, city.name, side, np.stack([east, north], -1), frames)
  write_msls_side(
      out_dir, city.name, side, table,
      lon_lat=np.stack([np.asarray(lon, float), np.asarray(lat, float)], -1),
      captured_at=[fr.captured_at for fr in frames],
      unique_cluster=[fr.seq.street for fr in frames],
      view_direction=[fr.seq.view for fr in frames],
      sequence_key=[fr.seq_key for fr in frames], frame_number=[fr.number for fr in frames],
      subtasks={"s2w": [is_q and fr.cond.season == "winter" for fr in frames],
                "n2d": [is_q and fr.cond.night for fr in frames]},
      decimals=_DECIMALS)


def _side_table(out_dir: str, city: str, side: str, utm: np.ndarray,
                frames: list[_Frame]) -> ImageTable:
  """The ImageTable of one side's frames (panoramas keep the heading they were rendered at)."""
  n = len(frames)
  keys = np.array([fr.key for fr in frames])
  return ImageTable(
      root=out_dir, name=f"train_val/{city}/{side}",
      paths=np.array([f"train_val/{city}/{side}/images/{k}.jpg" for k in keys]), keys=keys,
      utm=utm, heading=np.array([fr.cam.heading_deg for fr in frames], np.float64),
      pano=np.array([fr.cam.panorama for fr in frames], bool),
      night=np.array([fr.cond.night for fr in frames], bool), in_all=np.ones(n, bool))


def _generate_city(config: WorldConfig, name: str, out_dir: str, used_keys: set,
                   progress_bar) -> dict:
  """Renders and writes one city; returns its sizes."""
  city = build_city(config, name)
  seqs = plan_city(config, city)
  if progress_bar is not None:
    progress_bar.total = (progress_bar.total or 0) + sum(len(q.along) for q in seqs)
    progress_bar.set_postfix_str(name)
    progress_bar.refresh()
  key_rng = seeded_rng(config.seed, "keys", name)
  frames = {"query": [], "database": []}
  for side in frames:
    os.makedirs(os.path.join(out_dir, "train_val", name, side, "images"), exist_ok=True)
  for qi, seq in enumerate(seqs):
    frames[seq.side] += _render_traversal(config, city, qi, seq, key_rng, out_dir, used_keys,
                                          progress_bar)
  for side, items in frames.items():
    _write_side(out_dir, city, side, items)
  sizes = {side: len(items) for side, items in frames.items()}
  sizes["panoramas"] = sum(1 for fr in frames["database"] if fr.cam.panorama)
  return sizes


# ---------------------------------------------------------------------------------------------
# The whole world, installed atomically
# ---------------------------------------------------------------------------------------------


def _read_marker(root: str) -> dict | None:
  """The parsed root/world.json, or None when it is missing or unreadable."""
  try:
    with open(os.path.join(root, _MARKER)) as fh:
      have = json.load(fh)
  except (OSError, ValueError):
    return None
  return have if isinstance(have, dict) else None


def _holds_world(root: str, want: dict) -> bool:
  """True if `root` is a complete world of `want`'s config and format version.

  Raises:
    FileExistsError: `root` exists and is neither a world (no world.json) nor empty.
  """
  if os.path.isdir(root):
    if os.path.isfile(os.path.join(root, _MARKER)):
      have = _read_marker(root)
      return (have is not None and have.get("format_version") == want["format_version"]
              and have.get("config") == want["config"])
    if os.listdir(root):
      raise FileExistsError(
          f"{root}: exists and is not a synthetic world (no {_MARKER}); refusing to overwrite "
          "it. Remove it or choose another directory.")
  elif os.path.exists(root):
    raise FileExistsError(f"{root}: exists and is not a directory")
  return False


def _newest_change(top: str) -> float:
  """The latest modification time of `top` and the directories below it (0 if it is gone)."""
  newest = 0.0
  for dirpath, _, _ in os.walk(top):
    try:
      newest = max(newest, os.stat(dirpath).st_mtime)
    except OSError:
      pass
  return newest


def _remove_abandoned(parent: str, base: str) -> None:
  """Removes siblings left by generators that died: .<base>.old-* always (they are garbage the
  moment they are renamed), .<base>.tmp-* when nothing in them changed for a day."""
  now = time.time()
  for entry in os.listdir(parent):
    path = os.path.join(parent, entry)
    if entry.startswith(f".{base}.old-"):
      shutil.rmtree(path, ignore_errors=True)
    elif (entry.startswith(f".{base}.tmp-")
          and now - _newest_change(path) > _ABANDONED_AFTER_S):
      shutil.rmtree(path, ignore_errors=True)


def _build(config: WorldConfig, out_dir: str, want: dict, progress: bool) -> None:
  """Renders every city into `out_dir`, then writes the marker (last)."""
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=0, desc="synthetic world", unit="img")
  try:
    used: set = set()
    sizes = {}
    for name in config.train_cities + config.val_cities:
      sizes[name] = _generate_city(config, name, out_dir, used, bar)
  finally:
    if bar is not None:
      bar.close()
  marker = dict(want, cities=sizes, train_cities=list(config.train_cities),
                val_cities=list(config.val_cities))
  gcl_io.write_json(os.path.join(out_dir, _MARKER), marker, indent=1, sort_keys=True)


def _install(tmp: str, root: str, want: dict, attempts: int = 3) -> None:
  """Renames the finished world `tmp` to `root`.

  A stale world at `root` is renamed aside first and then deleted; if another generator installs
  the same world meanwhile, that one is kept and `tmp` is deleted.
  """
  parent, base = os.path.split(root)
  for _ in range(attempts):
    if _holds_world(root, want):  # Another generator finished the same world first.
      shutil.rmtree(tmp, ignore_errors=True)
      return
    old = None
    if os.path.isdir(root):  # A stale world (or an empty directory).
      old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex}")
      try:
        os.rename(root, old)
      except FileNotFoundError:  # Another generator moved it first.
        old = None
    try:
      os.rename(tmp, root)  # Atomic; fails if another world took `root` in the meantime.
    except OSError:
      continue
    finally:
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return
  raise OSError(f"{root}: could not install the generated world from {tmp}: other generators "
                f"kept replacing {root} ({attempts} attempts)")


# ---------------------------------------------------------------------------------------------
# The whole world, uploaded to an object store (root is a URL)
# ---------------------------------------------------------------------------------------------


def _url_holds_world(root: str, want: dict) -> bool:
  """`_holds_world` for a URL root: True if root/world.json records `want`.

  A root without world.json holding nothing but train_val/ is an unfinished upload (it is
  overwritten); anything else there is refused.

  Raises:
    FileExistsError: `root` holds objects that are not part of a synthetic world.
  """
  marker = gcl_io.join(root, _MARKER)
  if gcl_io.exists(marker):
    try:
      have = gcl_io.read_json(marker)
    except ValueError:
      return False
    return (isinstance(have, dict) and have.get("format_version") == want["format_version"]
            and have.get("config") == want["config"])
  if gcl_io.isdir(root):
    foreign = sorted({n.rstrip("/") for n in gcl_io.listdir(root)} - {"train_val"})
    if foreign:
      raise FileExistsError(
          f"{root}: exists and is not a synthetic world (no {_MARKER}; holds {foreign}); refusing "
          "to overwrite it. Remove it or choose another location.")
  elif gcl_io.exists(root):
    raise FileExistsError(f"{root}: exists and is not a directory")
  return False


def _local_files(top: str) -> list[str]:
  """Paths of the files under `top`, relative to it with "/" separators, sorted."""
  out = []
  for dirpath, _, filenames in os.walk(top):
    rel = os.path.relpath(dirpath, top)
    out += [name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}" for name in filenames]
  return sorted(out)


def _url_files(root: str) -> list[str]:
  """Paths of the objects under URL `root`, relative to it with "/" separators."""
  out = []
  for dirpath, _, filenames in gcl_io.walk(root):
    rel = dirpath[len(root):].strip("/")
    out += [f"{rel}/{name}" if rel else name for name in filenames]
  return out


def _upload_world(config: WorldConfig, root: str, want: dict, progress: bool) -> None:
  """Renders the world into a local temporary directory and uploads it to URL `root`.

  world.json is uploaded last, after the files of a stale or unfinished world that are not part
  of this one were deleted; a world.json that records another world is deleted first, so no
  reader takes the mix for a finished world. The temporary directory is removed in any case.
  """
  marker = gcl_io.join(root, _MARKER)
  had_objects = gcl_io.isdir(root)
  if had_objects:
    gcl_io.remove(marker)  # a stale world: incomplete from now until the new marker lands
  scratch = tempfile.mkdtemp(prefix="gcl_world-")
  try:
    _build(config, scratch, want, progress)
    names = _local_files(scratch)
    for name in names:
      if name != _MARKER:
        with open(os.path.join(scratch, name), "rb") as fh:
          gcl_io.atomic_write(gcl_io.join(root, name), fh.read())
    if had_objects:
      for name in sorted(set(_url_files(root)) - set(names)):
        gcl_io.remove(gcl_io.join(root, name))
    with open(os.path.join(scratch, _MARKER), "rb") as fh:
      gcl_io.atomic_write(marker, fh.read())
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def generate_world(root: str, config: WorldConfig = WorldConfig(), *,
                   progress: bool = True) -> str:
  """Writes the synthetic world under `root` in the MSLS layout, once; returns `root`.

  An existing world is reused when root/world.json records the same config (and format
  version). Otherwise the world is generated into a uniquely named temporary sibling directory
  (.<name>.tmp-<random>), world.json is written last, and the directory is renamed into place:
  generators running at the same time, on one host or on several sharing a file system, never
  see a half-written world, and the first one to finish wins (the others discard their copy). A
  stale world (another config) is replaced; any other non-empty `root` raises an error rather
  than being deleted. An interrupted run removes its temporary directory; leftovers of killed
  runs are removed by a later call once nothing has changed in them for a day.

  A URL `root` (gs://bucket/dir, anything `gcl_jax.io` reaches) cannot be renamed into place:
  the world is rendered into a local temporary directory (removed afterwards, so nothing stays
  on local disk) and uploaded file by file through `gcl_jax.io`, world.json last; a world
  without world.json (an interrupted upload) or with another config is overwritten, objects of
  the old world that the new one lacks are deleted before world.json is written. Generators
  uploading the same world at the same time write identical bytes.

  Args:
    root: output directory (local path or URL).
    config: the world to build.
    progress: show a tqdm progress bar.

  Returns:
    `root`.

  Raises:
    TypeError: `config` is not a WorldConfig.
    FileExistsError: `root` exists, is not empty and is not a synthetic world.
  """
  if not isinstance(config, WorldConfig):
    raise TypeError(f"config must be a WorldConfig, got {type(config).__name__}")
  root = os.fspath(root).rstrip("/") or "/"
  want = {"format_version": FORMAT_VERSION, "config": config.to_json_dict()}
  if gcl_io.is_url(root):
    if not _url_holds_world(root, want):
      _upload_world(config, root, want, progress)
    return root
  if _holds_world(root, want):
    return root
  parent, base = os.path.split(os.path.abspath(root))
  os.makedirs(parent, exist_ok=True)
  _remove_abandoned(parent, base)
  tmp = os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex}")
  os.makedirs(tmp)
  try:
    _build(config, tmp, want, progress)
    _install(tmp, os.path.join(parent, base), want)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return root

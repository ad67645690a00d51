"""File access for the paths gcl-jax reads and writes: local paths and URLs (gs://, ...).

Every path is handed to `etils.epath` (the layer orbax uses): local paths go to the operating
system, URLs to the matching backend, so a workdir, a dataset root or a label directory may be a
bucket. `atomic_write` (and `atomic_write_with`, for writers that want a file object) is the one
way the library writes a file that another process (or a restarted run) may read: nobody ever sees
half of it.

URLs go through fsspec (gcsfs for gs://, s3fs for s3://), not tf.io.gfile: importing this module
sets `EPATH_USE_TF=false` unless the environment already sets EPATH_USE_TF. Orbax resolves its
metadata paths with the same etils.epath, so checkpoints, metrics and results all reach a bucket
through one client, which honours `STORAGE_EMULATOR_HOST` (a local GCS emulator); tensorstore,
which writes orbax's arrays, honours `TENSORSTORE_GCS_HTTP_URL`.
"""

from __future__ import annotations

import io as io_lib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

from etils import epath


def _use_fsspec_for_urls() -> None:
  """Makes etils.epath resolve URLs with fsspec instead of tf.io.gfile (see the module docstring).

  etils reads EPATH_USE_TF once and caches the answer; the cache is cleared in case a path was
  resolved before this module was imported.
  """
  if "EPATH_USE_TF" in os.environ:
    return
  os.environ["EPATH_USE_TF"] = "false"
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  cached = getattr(gpath, "_is_tf_installed", None)
  if cached is not None and hasattr(cached, "cache_clear"):
    cached.cache_clear()


_use_fsspec_for_urls()

PathLike = str | os.PathLike


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path (a local path or a URL such as gs://bucket/dir)."""
  return epath.Path(p)


def is_url(p: PathLike) -> bool:
  """True for paths with a scheme (gs://, s3://, ...), False for local paths."""
  return "://" in os.fspath(p)


def absolute(p: PathLike) -> str:
  """Local paths made absolute (as orbax wants them); URLs unchanged."""
  return os.fspath(p) if is_url(p) else os.path.abspath(os.fspath(p))


def join(base: PathLike, *parts: str) -> str:
  """`base/part/...` as a string, for local paths and URLs alike (never made absolute)."""
  return os.fspath(path(base).joinpath(*parts))


def exists(p: PathLike) -> bool:
  return path(p).exists()


def makedirs(p: PathLike) -> str:
  """Creates directory `p` and its parents if missing; returns `p` as a string."""
  path(p).mkdir(parents=True, exist_ok=True)
  return os.fspath(p)


def read_text(p: PathLike) -> str:
  return path(p).read_text()


def read_bytes(p: PathLike) -> bytes:
  return path(p).read_bytes()


def read_json(p: PathLike) -> Any:
  return json.loads(read_text(p))


def remove(p: PathLike, missing_ok: bool = True) -> None:
  """Deletes file `p` (no error when it is absent and `missing_ok`)."""
  path(p).unlink(missing_ok=missing_ok)


def atomic_write(p: PathLike, data: bytes | str) -> str:
  """Writes `data` to `p` so that readers see either the old file or the whole new one (how:
  `atomic_write_with`).

  Returns:
    `p` as a string.
  """
  raw = data.encode() if isinstance(data, str) else data
  return atomic_write_with(p, lambda f: f.write(raw))


def atomic_write_with(p: PathLike, write: Callable[[BinaryIO], Any]) -> str:
  """Writes what `write(file_object)` writes (np.save, np.savez, faiss, ...) to `p` atomically.

  Local files are streamed to a temporary file in the same directory, flushed, fsynced and
  renamed over the target, so a `write` that raises leaves no file behind and the old one, if
  any, untouched, and large files (a FAISS index) are never held in memory. Objects in a bucket
  become visible only when their upload completes: the bytes are collected in memory and
  uploaded once `write` has returned. Parent directories are created.

  Returns:
    `p` as a string.
  """
  target = os.fspath(p)
  if is_url(target):
    buf = io_lib.BytesIO()
    write(buf)
    path(target).parent.mkdir(parents=True, exist_ok=True)
    path(target).write_bytes(buf.getvalue())
    return target
  directory = os.path.dirname(target) or "."
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w+b") as f:  # readable too: some writers (h5py) read back
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
    os.replace(tmp, target)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return target


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_json(p: PathLike, obj: Any, *, indent: int = 1, sort_keys: bool = False) -> str:
  """`atomic_write` of `obj` as JSON (with a final newline)."""
  return atomic_write(p, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def append_text(p: PathLike, text: str) -> None:
  """Appends `text` to a log file (metrics.jsonl); see `append_bytes`."""
  append_bytes(p, text.encode())


def append_bytes(p: PathLike, data: bytes) -> None:
  """Appends `data` to file `p` (created with its parents if missing); on object stores, which
  cannot append, the object is rewritten with the new bytes at its end."""
  if is_url(p):
    old = read_bytes(p) if exists(p) else b""
    atomic_write(p, old + bytes(data))
    return
  os.makedirs(os.path.dirname(os.fspath(p)) or ".", exist_ok=True)
  with path(p).open("ab") as f:
    f.write(data)


def isdir(p: PathLike) -> bool:
  return path(p).is_dir()


def listdir(p: PathLike) -> list[str]:
  """Names of the entries of directory `p` (unsorted, as the file system lists them)."""
  return [child.name for child in path(p).iterdir()]


def open(p: PathLike, mode: str = "r"):  # pylint: disable=redefined-builtin
  """A file object for `p` (local or URL); use as a context manager."""
  return path(p).open(mode)


def walk(top: PathLike):
  """Like os.walk for local paths and URLs: yields (dirpath, dirnames, filenames), top-down."""
  if not is_url(top):
    yield from os.walk(os.fspath(top))
    return
  dirs, files = [], []
  for child in path(top).iterdir():
    (dirs if child.is_dir() else files).append(child.name)
  yield os.fspath(top), dirs, files
  for d in dirs:
    yield from walk(join(top, d))

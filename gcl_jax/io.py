"""File access for the paths gcl-jax reads and writes: local paths and URLs (gs://, ...).

Every path is handed to `etils.epath` (the layer orbax uses): local paths go to the operating
system, URLs to the matching backend, so a workdir, a dataset root or a label directory may be a
bucket. `atomic_write` is the one way the library writes a file that another process (or a
restarted run) may read: nobody ever sees half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from etils import epath

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


def read_json(p: PathLike) -> Any:
  return json.loads(read_text(p))


def atomic_write(p: PathLike, data: bytes | str) -> str:
  """Writes `data` to `p` so that readers see either the old file or the whole new one.

  Local files are written to a temporary file in the same directory, flushed, fsynced and
  renamed over the target. Objects in a bucket become visible only when their upload completes,
  so URLs are written directly. Parent directories are created.

  Returns:
    `p` as a string.
  """
  target = os.fspath(p)
  raw = data.encode() if isinstance(data, str) else bytes(data)
  if is_url(target):
    path(target).parent.mkdir(parents=True, exist_ok=True)
    path(target).write_bytes(raw)
    return target
  directory = os.path.dirname(target) or "."
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(raw)
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
  """Appends `text` to a log file (metrics.jsonl); on object stores, which cannot append, the
  object is rewritten with the new text at its end."""
  if is_url(p):
    old = read_text(p) if exists(p) else ""
    atomic_write(p, old + text)
    return
  os.makedirs(os.path.dirname(os.fspath(p)) or ".", exist_ok=True)
  with open(p, "a") as f:
    f.write(text)


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

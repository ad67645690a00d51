"""Reading image bytes wherever they live: local files, URLs (gcl_jax.io), or a registered
source such as a prepared TFDS dataset (`tfds://<name>/<version>/<split>/<index>`)."""

from __future__ import annotations

import io
from typing import Callable

from PIL import Image

from gcl_jax import io as gcl_io

_SOURCES: dict[str, Callable[[str], bytes]] = {}


def register_source(prefix: str, reader: Callable[[str], bytes]) -> None:
  """Makes `read_bytes` answer paths starting with `prefix + "/"` with `reader(path)`."""
  _SOURCES[prefix.rstrip("/")] = reader


def registered_reader(path: str) -> Callable[[str], bytes] | None:
  """The registered reader of `path`, or None for ordinary files and URLs."""
  for prefix, reader in _SOURCES.items():
    if path.startswith(prefix + "/"):
      return reader
  return None


def read_bytes(path: str) -> bytes:
  """Encoded bytes of an image path (registered source, remote URL or local file)."""
  reader = registered_reader(path)
  if reader is not None:
    return reader(path)
  if "://" in path:
    with gcl_io.open(path, "rb") as f:
      return f.read()
  with open(path, "rb") as f:
    return f.read()


def open_image(path: str) -> Image.Image:
  """PIL image of any path `read_bytes` understands."""
  return Image.open(io.BytesIO(read_bytes(path)))

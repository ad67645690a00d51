"""Trivial descriptors that a learned model has to beat."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from gcl_jax.data import files


def _thumbnail(path: str, size: tuple[int, int]) -> np.ndarray:
  """Decodes one image and returns its (H, W, 3) bilinear thumbnail in [0, 1], flattened."""
  try:
    with files.open_image(path) as im:
      rgb = im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
  except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError.
    raise ValueError(f"cannot decode image {path!r}: {e}") from e
  return np.asarray(rgb, np.float32).reshape(-1) / np.float32(255.0)


def thumbnail_descriptors(paths: Sequence[str], size: tuple[int, int] = (8, 12),
                          num_threads: int | None = None) -> np.ndarray:
  """Raw-colour thumbnail descriptors: the trivial "no learning" retrieval baseline.

  Each image is decoded with PIL, converted to RGB, resized to H x W = `size` with PIL's bilinear
  filter (which antialiases when shrinking), scaled to [0, 1] and flattened in (H, W, C) order. No
  other normalization is applied (no mean subtraction, no L2 normalization): distances compare raw
  colours, so the baseline is as naive as it looks.

  Args:
    paths: image paths (local, or gs://... URLs read through gcl_jax.io).
    size: (H, W) of the thumbnail; the default 8 x 12 keeps the 3:4 aspect of 480 x 640 images.
    num_threads: decoding threads (PIL releases the GIL while decoding); default min(8, CPUs).

  Returns:
    (len(paths), H * W * 3) float32 array with values in [0, 1].

  Raises:
    ValueError: a bad size, or an image that cannot be decoded (the message names its path).
  """
  if (len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                            for s in size)):
    raise ValueError(f"size must be (height, width) with positive integers, got {size!r}")
  size = (int(size[0]), int(size[1]))
  paths = [os.fspath(p) for p in paths]
  dim = size[0] * size[1] * 3
  if not paths:
    return np.zeros((0, dim), np.float32)
  if num_threads is None:
    num_threads = min(8, os.cpu_count() or 1)
  out = np.empty((len(paths), dim), np.float32)
  if num_threads <= 1 or len(paths) < 16:
    for i, p in enumerate(paths):
      out[i] = _thumbnail(p, size)
    return out
  with ThreadPoolExecutor(max_workers=num_threads) as pool:
    for i, row in enumerate(pool.map(lambda p: _thumbnail(p, size), paths)):
      out[i] = row
  return out

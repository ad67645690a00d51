"""The image table: what every dataset reader produces.

One table describes one image set (for MSLS: one city's `query` or `database` side). Row order is
the on-disk order of the dataset's index (MSLS: CSV order); label tables index rows by position,
so readers must never reorder.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageTable:
  """Images of one set, with metadata as parallel numpy arrays of length N.

  Attributes:
    root: dataset root directory (local path or gs:// URL); `paths` are relative to it.
    name: human-readable name, e.g. "train_val/cph/query".
    paths: (N,) str, image paths relative to `root`.
    keys: (N,) str, image keys (MSLS: file stem).
    utm: (N, 2) float64, UTM (east, north) in metres.
    heading: (N,) float64, compass angle in degrees clockwise from north; NaN when unknown.
    pano: (N,) bool, panoramic image (its heading is meaningless).
    night: (N,) bool, taken at night.
    in_all: (N,) bool, member of MSLS subtask `all` (True for datasets without subtasks).
  """

  root: str
  name: str
  paths: np.ndarray
  keys: np.ndarray
  utm: np.ndarray
  heading: np.ndarray
  pano: np.ndarray
  night: np.ndarray
  in_all: np.ndarray

  def __post_init__(self):
    n = len(self.paths)
    for field in ("keys", "heading", "pano", "night", "in_all"):
      if len(getattr(self, field)) != n:
        raise ValueError(f"ImageTable {self.name}: `{field}` has {len(getattr(self, field))} rows, "
                         f"`paths` has {n}")
    if self.utm.shape != (n, 2):
      raise ValueError(f"ImageTable {self.name}: `utm` must have shape ({n}, 2), got {self.utm.shape}")

  def __len__(self) -> int:
    return len(self.paths)

  def full_paths(self) -> list[str]:
    """Absolute image paths (root joined with each relative path)."""
    root = self.root.rstrip("/")
    return [f"{root}/{p}" for p in self.paths]

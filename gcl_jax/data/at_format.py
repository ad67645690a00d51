"""Reader for the `@` file-name convention (VPR-datasets-downloader, deep-visual-geo-localization).

    <root>/images/{train,val,test}/{database,queries}/.../
        @east@north@zone@letter@lat@lon@pano_id@tile@heading@pitch@roll@height@timestamp@note@.jpg

All metadata is in the file name: 14 `@`-separated fields between a leading `@` and the trailing
`@.<ext>`; empty fields are allowed except UTM east/north, which must be numbers (when they are
empty but latitude/longitude are given, UTM is computed from latitude/longitude in each point's own
zone). Row order is the sorted order of the relative paths (the benchmark's
`sorted(glob(..., recursive=True))`). Heading is NaN when its field is empty. These datasets have no
panorama/night flags: `pano` and `night` are False, `in_all` True.
"""

from __future__ import annotations

import math
import os

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.types import DatasetError
from gcl_jax.types import ImageTable

FIELDS = ("east", "north", "zone", "letter", "lat", "lon", "pano_id", "tile", "heading", "pitch",
          "roll", "height", "timestamp", "note")
SPLITS = ("train", "val", "test")
SIDES = {"database": "database", "queries": "queries", "query": "queries"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def parse_name(name: str) -> dict[str, str]:
  """Splits an `@`-format file name into its 14 named fields (strings, possibly empty).

  Raises:
    DatasetError: naming the file when it does not have the @...@.ext shape.
  """
  base = os.path.basename(name)
  parts = base.split("@")
  if len(parts) != len(FIELDS) + 2 or parts[0] != "" or not parts[-1].startswith("."):
    raise DatasetError(
        f"{name}: malformed @-format file name: expected '@' + {len(FIELDS)} '@'-separated fields "
        f"({'@'.join(FIELDS)}) + '@.ext', got {len(parts) - 2} fields")
  return dict(zip(FIELDS, parts[1:-1]))


def _number(name: str, fields: dict[str, str], field: str) -> float:
  value = fields[field]
  if value == "":
    return math.nan
  try:
    x = float(value)
  except ValueError:
    raise DatasetError(f"{name}: field `{field}` is not a number: {value!r}") from None
  if not math.isfinite(x):
    raise DatasetError(f"{name}: field `{field}` is not finite: {value!r}")
  return x


def parse_metadata(name: str) -> tuple[float, float, float]:
  """(east, north, heading) of one @-format file name; heading NaN when empty."""
  f = parse_name(name)
  east, north = _number(name, f, "east"), _number(name, f, "north")
  if math.isnan(east) or math.isnan(north):
    lat, lon = _number(name, f, "lat"), _number(name, f, "lon")
    if math.isnan(lat) or math.isnan(lon):
      raise DatasetError(f"{name}: empty UTM east/north ({f['east']!r}, {f['north']!r}) and no "
                         f"latitude/longitude to compute them from")
    from gcl_jax.labels.utm import latlon_to_utm  # pylint: disable=g-import-not-at-top
    e, n, _, _ = latlon_to_utm(np.array([lat]), np.array([lon]))
    east, north = float(e[0]), float(n[0])
  heading = _number(name, f, "heading")
  return east, north, (heading % 360.0 if math.isfinite(heading) else math.nan)


def list_images(directory: str) -> list[str]:
  """Image files under `directory` (recursive), as sorted paths relative to it."""
  out = []
  for dirpath, _, files in gcl_io.walk(directory):
    rel = dirpath.rstrip("/")[len(directory.rstrip("/")):].strip("/")
    for f in files:
      if f.lower().endswith(IMAGE_EXTENSIONS):
        out.append(f"{rel}/{f}" if rel else f)
  return sorted(out)


def read_at_format(root: str, split: str, side: str) -> ImageTable:
  """Reads `<root>/images/<split>/<side>` into an ImageTable.

  Args:
    root: dataset root (the folder holding `images/`), local or gs://.
    split: "train", "val" or "test".
    side: "database" or "queries" ("query" is accepted).

  Returns:
    The table; paths are relative to `root` (`images/<split>/<side>/<name>`), keys are the file
    names without extension, utm = (east, north) from the name, heading from the name (NaN when
    empty).

  Raises:
    DatasetError: the folder is missing or empty, or a file name is malformed (names the file).
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if side not in SIDES:
    raise ValueError(f"side must be one of {tuple(SIDES)}, got {side!r}")
  side = SIDES[side]
  rel_dir = f"images/{split}/{side}"
  directory = f"{root.rstrip('/')}/{rel_dir}"
  if not gcl_io.isdir(directory):
    raise DatasetError(f"{directory}: directory not found (split {split!r}, side {side!r})")
  names = list_images(directory)
  if not names:
    raise DatasetError(f"{directory}: no images ({'/'.join(IMAGE_EXTENSIONS)})")
  meta = np.array([parse_metadata(f"{directory}/{n}") for n in names], np.float64).reshape(-1, 3)
  keys = np.array([os.path.splitext(os.path.basename(n))[0] for n in names])
  n = len(names)
  return ImageTable(
      root=root,
      name=f"{split}/{side}",
      paths=np.array([f"{rel_dir}/{name}" for name in names]),
      keys=keys,
      utm=meta[:, :2].copy(),
      heading=meta[:, 2].copy(),
      pano=np.zeros(n, bool),
      night=np.zeros(n, bool),
      in_all=np.ones(n, bool),
  )


def format_name(east: float, north: float, *, zone: str = "", letter: str = "", lat: str = "",
                lon: str = "", pano_id: str = "", tile: str = "", heading: float | None = None,
                note: str = "", ext: str = ".jpg") -> str:
  """Builds an @-format file name (for tests and converters); heading None -> empty field."""
  fields = {f: "" for f in FIELDS}
  fields.update(east=f"{east:.2f}", north=f"{north:.2f}", zone=zone, letter=letter, lat=lat,
                lon=lon, pano_id=pano_id, tile=tile, note=note,
                heading="" if heading is None else f"{heading:g}")
  return "@" + "@".join(fields[f] for f in FIELDS) + "@" + ext

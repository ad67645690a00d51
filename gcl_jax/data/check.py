"""Scans a dataset before a long run: every table parses, every listed image opens and decodes.

    report = Report(root=root, format="msls")
    query, database = check_msls_city(root, "cph", "train_val", report)
    check_images([query, database], report)       # thread pool, tqdm bar
    print(report.summary()); report.to_dict()      # every problem: file and reason

A problem is anything that stops a run: a table that does not parse (the reader's message names
the file, row and column; a reader stops at the first bad row of a file), a listed image that is
missing, truncated, not an image or empty. Files in an MSLS `images/` folder that no table lists
are noted but are not problems (runs never read them).

`python main.py --mode=check_data --config=...` (gcl_jax.validate.check_dataset) checks the
configured dataset this way and adds which training cities have cached labels.

Data layer: imports the readers and the types only.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
from collections.abc import Callable, Iterable, Sequence

from PIL import Image

from gcl_jax import io as gcl_io
from gcl_jax.data import files, msls
from gcl_jax.types import DatasetError, ImageTable

DRAFT_SCALE = 8  # JPEGs are decoded at 1/8 size: every byte is still entropy-decoded.


@dataclasses.dataclass
class Report:
  """What a check found.

  Attributes:
    root: the dataset root checked.
    format: its config.data.format.
    tables: names of the image tables read (e.g. "train_val/cph/query").
    num_images: images opened and decoded (each distinct path once).
    problems: {"file", "reason"} of everything that would stop a run.
    notes: {"file", "reason"} of oddities that do not (e.g. images no table lists).
    labels: {city: label-cache status} of the training cities, when known.
  """

  root: str = ""
  format: str = ""
  tables: list[str] = dataclasses.field(default_factory=list)
  num_images: int = 0
  problems: list[dict[str, str]] = dataclasses.field(default_factory=list)
  notes: list[dict[str, str]] = dataclasses.field(default_factory=list)
  labels: dict[str, str] = dataclasses.field(default_factory=dict)

  def problem(self, file: str, reason: str) -> None:
    self.problems.append({"file": file, "reason": reason})

  def error(self, e: BaseException) -> None:
    """Records a reader's exception: its message starts with the file (and row) at fault."""
    file, reason = split_message(str(e))
    self.problem(file, reason)

  @property
  def ok(self) -> bool:
    return not self.problems

  def to_dict(self) -> dict:
    return {**dataclasses.asdict(self), "num_problems": len(self.problems), "ok": self.ok}

  def summary(self, max_notes: int = 20) -> str:
    """A text report: what was read, every problem (file: reason), label status, the verdict."""
    lines = [f"dataset {self.root} ({self.format}): {len(self.tables)} tables, "
             f"{self.num_images} images checked"]
    if self.labels:
      cached = sorted(c for c, s in self.labels.items() if s == "cached")
      other = {c: s for c, s in sorted(self.labels.items()) if s != "cached"}
      lines.append(f"labels cached: {', '.join(cached) if cached else 'none'}")
      lines += [f"labels of {c}: {s}" for c, s in other.items()]
    for n in self.notes[:max_notes]:
      lines.append(f"note: {n['file']}: {n['reason']}")
    if len(self.notes) > max_notes:
      lines.append(f"note: ... and {len(self.notes) - max_notes} more notes")
    for p in self.problems:
      lines.append(f"problem: {p['file']}: {p['reason']}" if p["file"] else
                   f"problem: {p['reason']}")
    lines.append(f"{len(self.problems)} problem(s) found" if self.problems else "no problems found")
    return "\n".join(lines)


def split_message(message: str) -> tuple[str, str]:
  """("file[:row]", "reason") of a reader's message "file[:row]: reason" ("", message if none)."""
  head, sep, rest = message.partition(": ")
  if sep and ("/" in head or "." in head) and " " not in head:
    return head, rest
  return "", message


def read_tables(report: Report, read: Callable[[], Sequence[ImageTable]]) -> list[ImageTable]:
  """`read()`'s tables, recorded in the report; a reader's error becomes a problem."""
  try:
    tables = list(read())
  except (DatasetError, FileNotFoundError, ValueError) as e:
    report.error(e)
    return []
  report.tables += [t.name for t in tables]
  return tables


def check_msls_city(root: str, city: str, split: str, report: Report
                    ) -> tuple[ImageTable | None, ImageTable | None]:
  """Reads both sides of an MSLS city (None for a side that does not parse) and notes images in
  its `images/` folders that the tables do not list."""
  sides = []
  for side in ("query", "database"):
    got = read_tables(report, lambda side=side: [msls.read_msls_side(root, city, side, split)])
    table = got[0] if got else None
    sides.append(table)
    if table is not None:
      _note_unlisted(table, f"{root.rstrip('/')}/{split}/{city}/{side}/images", report)
  return sides[0], sides[1]


def _note_unlisted(table: ImageTable, folder: str, report: Report) -> None:
  if not gcl_io.isdir(folder):
    return
  listed = {p.rsplit("/", 1)[-1] for p in table.paths}
  for name in sorted(gcl_io.listdir(folder)):
    name = name.rstrip("/")
    if name not in listed:
      report.notes.append({"file": f"{folder}/{name}",
                           "reason": f"not listed in {table.name}'s tables (never read)"})


def decode_image(path: str) -> None:
  """Opens and decodes `path` completely (JPEGs at 1/8 scale); raises on any fault."""
  data = files.read_bytes(path)
  if not data:
    raise ValueError("empty file")
  with Image.open(io.BytesIO(data)) as im:
    if im.format == "JPEG":
      im.draft("RGB", (max(1, im.width // DRAFT_SCALE), max(1, im.height // DRAFT_SCALE)))
    im.load()
    if im.width < 1 or im.height < 1:
      raise ValueError(f"image has size {im.width}x{im.height}")


def _reason(e: BaseException) -> str:
  if isinstance(e, FileNotFoundError):
    return "image file not found"
  if isinstance(e, Image.UnidentifiedImageError):
    return "not an image (PIL cannot identify it)"
  return f"cannot decode: {type(e).__name__}: {e}"


def check_images(tables: Iterable[ImageTable], report: Report, *, num_workers: int = 16,
                 progress: bool = True, open_image: Callable[[str], None] | None = None) -> None:
  """Opens and decodes every image of `tables` (each distinct path once) on a thread pool.

  Args:
    tables: the image tables whose images are checked.
    report: receives the count and a problem (file, reason) per image that fails.
    num_workers: threads (PIL decodes without holding the GIL).
    progress: show a tqdm progress bar.
    open_image: path -> None, raising when the image is bad (default `decode_image`).
  """
  open_image = open_image or decode_image
  paths = list(dict.fromkeys(p for t in tables for p in t.full_paths()))

  def check(path: str) -> str | None:
    try:
      open_image(path)
    except Exception as e:  # pylint: disable=broad-except
      return _reason(e)
    return None

  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(paths), desc="checking images", unit="img")
  bad = {}
  with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
    # Chunks keep the number of pending futures small on million-image datasets.
    for start in range(0, len(paths), 1024):
      chunk = paths[start:start + 1024]
      for path, reason in zip(chunk, pool.map(check, chunk)):
        if reason is not None:
          bad[path] = reason
      if bar is not None:
        bar.update(len(chunk))
  if bar is not None:
    bar.close()
  report.num_images += len(paths)
  for path in paths:  # in table order
    if path in bad:
      report.problem(path, bad[path])

"""tf.data input pipeline: read, decode, resize, normalize, batch, prefetch.

Preprocessing follows the authors' transform (GCL_REFERENCE 3.2): RGB, resize to (H, W) = (480, 640)
without keeping the aspect ratio with PIL's bilinear filter, ToTensor (/255), ImageNet mean/std.
Two back-ends (`resize_method`):

* "pil" (default): TF reads the bytes (see below for URLs), then PIL opens, converts to RGB and
  resizes them in one ``tf.numpy_function``: the authors' own code path, hence bit-exact. PIL
  releases the GIL while decoding and resampling, so the parallel map calls overlap; it measured
  1.4-2.2x faster than "tf" on 2 shared cores (benchmarks/input_pipeline.py). Not serialisable
  into a graph (no tf.data service).
* "tf": pure TF ops. ``decode_jpeg(dct_method="INTEGER_ACCURATE")`` (bit-identical to PIL's
  libjpeg decode; TF's default fast IDCT differs by up to ~15 grey levels), then PIL's two-pass
  scheme rebuilt from ``tf.image.resize(method="bilinear", antialias=True)`` (a triangle
  filter whose support widens with the downscale factor, like PIL's): horizontal pass, round to
  integers, vertical pass, round. Measured against Pillow 13: bit-exact on the G4 golden image
  (768x1024 -> 480x640) and on corridor (160x120) and 7-Scenes (640x480) frames at 480x640;
  1 grey level (1/255 in [0, 1], 0.0175 after normalization) on <= 0.13 % of the pixels of
  3264x2448 street photos and on < 3 % at other landscape sizes (2 levels seen once,
  120x160 -> 300x517). For some inputs (e.g. portrait 517x333 -> 480x640) Pillow 13's output
  equals vertical-then-horizontal resampling (rule not identified; its C source says horizontal
  first) and "tf" then differs by 1 level on ~20-26 % of the pixels. For comparison, one float
  resize without the intermediate rounding is off by up to 1 level with a -0.2 level mean bias,
  and antialias=False by up to 52 levels.

Elements carry uint8 images; ToTensor + Normalize run once per batch (same arithmetic as per
image, 4x less copying between stages) with `gcl_jax.data.normalize.normalize_array`: true float32
divisions in NumPy, as torch's, hence bit-identical to the authors' float tensors (inside a TF graph
Grappler would turn them into reciprocal multiplications, 1 ulp off). Normalizing costs 3.5 ms of
host CPU per 480x640 image, more than decoding a 640x480 JPEG (2 ms; benchmarks/input_pipeline.py,
profile lines): with ``normalize=False`` the streams yield the uint8 batches themselves (4x fewer
bytes to the accelerator) and the consumer normalizes them on device with
`gcl_jax.data.normalize.normalize_on_device`, also bit-identical (a 256-level lookup table). The
trainer and the descriptor extraction do so by default (config.data.normalize_on_device).

Where the bytes come from: every reading function takes ``reader``, a Python callable path ->
encoded bytes (e.g. `gcl_jax.data.tfds_source.TfdsSource.read` for ``tfds://`` paths of a prepared
TFDS dataset). Without one, `default_reader` picks it from the first path of the call (the paths
of one call share a dataset root): a registered source's reader, `gcl_jax.io.read_bytes` for URLs
(gs://...; the same client as every other file of a run, so a GCS emulator or another fsspec
backend works), and for local paths none, i.e. ``tf.io.read_file`` inside the graph. The decode,
resize and normalization that follow are the same code either way, so all give identical images.

``fast_decode=True`` (opt-in, "pil" only, NOT bit-exact) lets libjpeg decode JPEGs at 1/2, 1/4 or
1/8 scale (PIL ``Image.draft``) when the source is at least twice the target size in both
dimensions, then resizes as usual. It changes nothing for sources smaller than that (e.g. MSLS
640x480 or 1024x768 -> 480x640); the error where it applies is measured in
benchmarks/input_pipeline.py (``--fast_decode_check``).

Training reads all epochs through ONE pipeline (`pair_stream`, fed epoch after epoch by
gcl_jax.data.stream): its parallel loads and prefetch buffer run on across epoch boundaries
instead of being rebuilt, refilled and autotuned again at each one.

Bad input (a missing, truncated or corrupt file) never goes unnoticed and never shifts rows: every
element carries its index, failed elements are dropped by ``ignore_errors`` BEFORE batching, and the
consumer checks that the indices arrive without gaps. ``errors="raise"`` (default) then raises
`PipelineError` naming the file and the decoder's message; ``errors="skip"`` (pairs only) drops the
whole pair (both images and the label) and reports the count and the files at the end via the
`SkipReport` passed in (and a log warning). Evaluation batches always raise: a missing descriptor
would misalign the database.

TensorFlow is only used for input; it must never grab an accelerator, so GPUs are hidden from it at
import time.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import threading
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from gcl_jax import io as gcl_io
from gcl_jax.data import files
from gcl_jax.data.normalize import normalize_array
from gcl_jax.types import UserError

tf.config.set_visible_devices([], "GPU")

AUTOTUNE = tf.data.AUTOTUNE
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_METHODS = ("tf", "pil")

ByteReader = Callable[[str], bytes]
"""path -> encoded image bytes; raises (any exception) when the image cannot be read."""

_log = logging.getLogger(__name__)


class PipelineError(UserError, RuntimeError):
  """An image could not be read or decoded; the message names the file."""


@dataclasses.dataclass
class SkipReport:
  """Filled by `pair_batches(..., errors="skip")` while iterating.

  Attributes:
    skipped: number of pairs dropped whole.
    files: "path0 | path1: error" per dropped pair (the failing file is found by re-decoding).
  """
  skipped: int = 0
  files: list[str] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------------------- decode


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
  """Encoded bytes -> (H, W, 3) uint8; JPEGs with PIL's (libjpeg ISLOW) integer IDCT."""
  return tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))


def _pil_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = Image.fromarray(np.asarray(image)).resize((int(width), int(height)), Image.BILINEAR)
  return np.asarray(out, np.float32)


def _pil_decode_resize(data: bytes, height: int, width: int, fast_decode: bool = False
                       ) -> np.ndarray:
  """The authors' read_image + Resize: PIL open, convert('RGB'), bilinear resize -> uint8.

  convert('RGB') of an RGB image is a plain copy, so it is skipped (same pixels). With
  `fast_decode`, JPEGs at least 2x the target in both dimensions are DCT-scaled while decoding
  (`Image.draft`; not bit-exact).
  """
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(data, np.ndarray):  # eager numpy_function passes a 0-d object array
    data = data.item()
  height, width = int(height), int(width)
  with Image.open(io.BytesIO(data)) as image:
    if fast_decode and image.format == "JPEG":
      image.draft("RGB", (width, height))  # largest 1/2^k scale still >= (width, height)
    if image.mode != "RGB":
      image = image.convert("RGB")
    out = image.resize((width, height), Image.BILINEAR)
  return np.asarray(out, np.uint8)


def _as_str(path) -> str:
  if isinstance(path, np.ndarray):
    path = path.item()
  return path.decode() if isinstance(path, bytes) else str(path)


def default_reader(path: str) -> ByteReader | None:
  """The reader for `path` and its siblings when the caller gives none.

  A registered source's reader (e.g. tfds://...), `gcl_jax.io.read_bytes` for other URLs
  (gs://...), or None for local paths (`tf.io.read_file`, in the graph).
  """
  path = str(path)
  reader = files.registered_reader(path)
  if reader is None and gcl_io.is_url(path):
    reader = gcl_io.read_bytes
  return reader


def read_bytes(path: tf.Tensor, reader: ByteReader | None = None) -> tf.Tensor:
  """Encoded bytes of one image: `tf.io.read_file` (local paths), or `reader(path)`."""
  if reader is None:
    return tf.io.read_file(path)
  # An object array keeps trailing NUL bytes (a bytes scalar would lose them).
  fetch = lambda p: np.array(reader(_as_str(p)), dtype=object)
  out = tf.numpy_function(fetch, [path], tf.string, stateful=False)
  out.set_shape(())
  return out


def read_resized(path: tf.Tensor, image_size: Sequence[int], method: str = "pil", *,
                 reader: ByteReader | None = None, fast_decode: bool = False) -> tf.Tensor:
  """Reads, decodes and resizes one image -> (H, W, 3) uint8 (before ToTensor).

  "pil" decodes and resizes with PIL in one `tf.numpy_function` (the bytes are read by TF, or by
  `reader` in the same Python call); "tf" decodes with `decode_rgb` and resizes with
  `resize(..., "tf")`. `path` is read with `tf.io.read_file` unless `reader` is given: callers
  with URL paths pass `default_reader(path)`.

  Args:
    path: scalar string tensor.
    image_size: (H, W).
    method: "pil" or "tf".
    reader: optional path -> bytes callable replacing `tf.io.read_file` (see the module docstring).
    fast_decode: DCT-scaled JPEG decoding ("pil" only; not bit-exact; off by default).

  Returns:
    The resized uint8 image.
  """
  height, width = int(image_size[0]), int(image_size[1])
  if method not in RESIZE_METHODS:
    raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
  if fast_decode and method != "pil":
    raise ValueError(f"fast_decode needs resize method 'pil', got {method!r}")
  if method == "pil" and reader is not None:  # fetch + decode + resize in one Python call
    fn = lambda p: _pil_decode_resize(reader(_as_str(p)), height, width, fast_decode)
    out = tf.numpy_function(fn, [path], tf.uint8, stateful=False)
  elif method == "pil":
    out = tf.numpy_function(_pil_decode_resize, [tf.io.read_file(path), height, width,
                                                 fast_decode], tf.uint8, stateful=False)
  else:
    out = tf.cast(resize(decode_rgb(read_bytes(path, reader)), image_size, "tf"), tf.uint8)
  out.set_shape((height, width, 3))
  return out


def resize(image: tf.Tensor, image_size: Sequence[int], method: str = "pil") -> tf.Tensor:
  """(h, w, 3) uint8 -> (H, W, 3) float32 in [0, 255], bilinear, aspect ratio not kept."""
  height, width = int(image_size[0]), int(image_size[1])
  if method == "tf":
    # PIL (Resample.c) resamples in two separable passes, horizontal then vertical, rounding to
    # uint8 after each. Doing the same with TF's antialiased triangle filter reproduces PIL's
    # output up to rare 1-level flips (one float resize without the intermediate rounding is off
    # by up to 1 grey level with a -0.2 level bias).
    x = tf.cast(image, tf.float32)
    x = tf.image.resize(x, (tf.shape(x)[0], width), method="bilinear", antialias=True)
    x = tf.clip_by_value(tf.floor(x + 0.5), 0.0, 255.0)
    x = tf.image.resize(x, (height, width), method="bilinear", antialias=True)
    out = tf.clip_by_value(tf.floor(x + 0.5), 0.0, 255.0)
  elif method == "pil":
    out = tf.numpy_function(_pil_resize, [image, height, width], tf.float32, stateful=False)
  else:
    raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
  out.set_shape((height, width, 3))
  return out


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """[0, 255] (uint8 or float) -> (x / 255 - mean) / std (ToTensor + Normalize), float32."""
  image = tf.cast(image, tf.float32)
  return (image / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def normalize_batch(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """uint8 batch -> float32 `normalize_array` in one `tf.numpy_function` (exact, see above)."""
  out = tf.numpy_function(lambda x: normalize_array(x, mean, std), [images], tf.float32,
                          stateful=False)
  out.set_shape(images.shape)
  return out


def augment_colour(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mild colour jitter on a uint8 image -> uint8, stateless in `seed` (2 ints); geometry untouched.

  The authors train without augmentation; this is an opt-in extra (brightness +-0.2, contrast and
  saturation x[0.8, 1.2]), rounded back to uint8 like a jitter applied to a PIL image.
  """
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
  x = tf.cast(image, tf.float32) / 255.0
  x = tf.image.stateless_random_brightness(x, 0.2, seeds[0])
  x = tf.image.stateless_random_contrast(x, 0.8, 1.2, seeds[1])
  x = tf.image.stateless_random_saturation(x, 0.8, 1.2, seeds[2])
  return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def load_image(path: tf.Tensor, image_size: Sequence[int], mean: Sequence[float],
               std: Sequence[float], *, resize_method: str = "pil",
               augment_seed: tf.Tensor | None = None, reader: ByteReader | None = None
               ) -> tf.Tensor:
  """Reads one image file -> (H, W, 3) float32, resized (bilinear, aspect not kept), normalized.

  Args:
    path: scalar string tensor (local path or gs:// URL).
    image_size: (H, W).
    mean: per-channel mean of the [0, 1] image.
    std: per-channel std.
    resize_method: "pil" (PIL itself, exact) or "tf" (PIL's two-pass bilinear in TF ops, <= 1
      grey level off); see the module docstring for the measured differences.
    augment_seed: when given, `augment_colour` with this stateless seed is applied.
    reader: optional path -> bytes callable replacing `tf.io.read_file`.

  Returns:
    The normalized image.
  """
  image = read_resized(path, image_size, resize_method, reader=reader)
  if augment_seed is not None:
    image = augment_colour(image, augment_seed)
  return normalize(image, mean, std)


def check_file(path: str, image_size: Sequence[int] = (8, 8), resize_method: str = "pil",
               reader: ByteReader | None = None) -> str | None:
  """Eagerly runs `read_resized` on one file; returns None if fine, else the error message.

  Without `reader`, `default_reader(path)` is used.
  """
  if reader is None:
    reader = default_reader(path)
  try:
    read_resized(tf.constant(path), image_size, resize_method, reader=reader)
  except Exception as e:  # pylint: disable=broad-except
    # Eager numpy_function re-raises PIL's own exceptions (OSError, UnidentifiedImageError).
    lines = [l.strip() for l in getattr(e, "message", str(e)).splitlines() if l.strip()]
    # numpy_function errors carry a Python traceback: keep its last line (the exception).
    detail = next((l for l in reversed(lines) if not l.startswith(("[[", "{{", "File "))),
                  lines[-1] if lines else "")
    detail = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\].*$", "", detail)
    return f"{type(e).__name__}: {detail}"
  return None


# ----------------------------------------------------------------------------------------- sharding


def host_indices(num_items: int, batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> np.ndarray:
  """Indices of this host's items when global batches of `batch_size` are split across hosts.

  Global batch b holds items [b * batch_size, (b + 1) * batch_size); host h gets the h-th
  contiguous slice of batch_size // process_count items of every full global batch (the layout of
  `jax.make_array_from_process_local_data` along the data axis). The partial last global batch is
  dropped, so every host runs the same number of steps.

  Args:
    num_items: length of the global, already ordered item list.
    batch_size: global batch size; must be divisible by process_count.
    process_index: this host (default jax.process_index()).
    process_count: number of hosts (default jax.process_count()).

  Returns:
    (num_batches * batch_size // process_count,) int64 indices, in stream order.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if batch_size % process_count:
    raise ValueError(f"global batch size {batch_size} is not divisible by {process_count} hosts")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  local = batch_size // process_count
  n_batches = num_items // batch_size
  grid = np.arange(n_batches * batch_size).reshape(n_batches, process_count, local)
  return grid[:, process_index].ravel()


# ------------------------------------------------------------------------------------------ streams


def _checked(ds: tf.data.Dataset, n: int | Callable[[], int], batch_size: int,
             drop_remainder: bool, paths: Callable[[int], list[str]],
             check: Callable[[str], str | None], errors: str, report: SkipReport | None,
             done: Callable[[int], None] | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Iterates batches of `ds` (elements carry `_index`), checking for dropped elements.

  `n` is the number of elements, or (endless streams) a function giving it once `ds` has ended;
  `done(i)`, when given, is told after each batch that elements below i are no longer needed.
  """
  expected = 0  # next index that should arrive

  def failures(lo: int, hi: int) -> list[tuple[int, str]]:
    out = []
    for i in range(lo, hi):
      for p in paths(i):
        msg = check(p)
        if msg is not None:
          out.append((i, f"{p}: {msg}"))
          break
    return out

  def handle(lo: int, hi: int, complete: bool) -> None:
    bad = failures(lo, hi)
    if not bad and complete:
      bad = [(lo, f"{' | '.join(paths(lo))}: element dropped by the input pipeline "
                  "(transient read error?)")]
    if not bad:
      return
    if errors == "raise":
      i, msg = bad[0]
      raise PipelineError(f"cannot load element {i} of the stream: {msg}")
    for i, msg in bad:
      _log.warning("skipping pair %d: %s", i, msg)
      if report is not None:
        report.skipped += 1
        report.files.append(msg)

  seen_batches = 0
  for batch in ds.as_numpy_iterator():
    idx = batch.pop("_index")
    for i in idx:
      if i != expected:
        handle(expected, int(i), complete=True)
      expected = int(i) + 1
    seen_batches += 1
    if done is not None:
      done(expected)
    yield batch
  n = n if isinstance(n, int) else n()
  num_batches = n // batch_size if drop_remainder else -(-n // batch_size)
  # Elements lost at the end show up only as missing batches (or a short last batch).
  if seen_batches < num_batches or (not drop_remainder and expected < n):
    handle(expected, n, complete=not drop_remainder)
  if report is not None and report.skipped:
    _log.warning("input pipeline skipped %d pair(s) with unreadable images", report.skipped)


def _pair_elements(rows: tf.data.Dataset, *, batch_size: int, image_size: Sequence[int],
                   mean: Sequence[float], std: Sequence[float], resize_method: str,
                   augment: bool, reader: ByteReader | None, normalize: bool,
                   fast_decode: bool, num_parallel_calls: int | None) -> tf.data.Dataset:
  """Rows (index, path0, path1, label, augmentation seed, augmentation position) -> batches."""
  read = lambda p: read_resized(p, image_size, resize_method, reader=reader,
                                fast_decode=fast_decode)

  def load(i, p0, p1, y, seed, position):
    im0, im1 = read(p0), read(p1)
    if augment:
      im0 = augment_colour(im0, tf.stack([seed, 2 * position]))
      im1 = augment_colour(im1, tf.stack([seed, 2 * position + 1]))
    return {"im0": im0, "im1": im1, "label": y, "_index": i}

  def norm(batch):  # uint8 per element (4x less copying), normalized once per batch
    return {**batch, "im0": normalize_batch(batch["im0"], mean, std),
            "im1": normalize_batch(batch["im1"], mean, std)}

  # Ordered parallel map: the gap check in `_checked` relies on the order.
  ds = rows.map(load, num_parallel_calls=num_parallel_calls or AUTOTUNE,
                deterministic=True).ignore_errors()
  ds = ds.batch(batch_size, drop_remainder=True)
  if normalize:
    ds = ds.map(norm, num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


def pair_batches(path0: np.ndarray, path1: np.ndarray, label: np.ndarray, *, batch_size: int,
                 image_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                 resize_method: str = "pil", augment: bool = False, seed: int = 0,
                 errors: str = "raise", skip_report: SkipReport | None = None,
                 reader: ByteReader | None = None, normalize: bool = True,
                 fast_decode: bool = False, num_parallel_calls: int | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Batches {im0, im1, label} of the given pairs, in order; the last partial batch is dropped.

  Args:
    path0: (P,) image paths of the first image of each pair.
    path1: (P,) image paths of the second image.
    label: (P,) graded labels.
    batch_size: batch size (per host).
    image_size: (H, W).
    mean: per-channel mean.
    std: per-channel std.
    resize_method: "pil" (default, exact) or "tf" (see the module docstring).
    augment: colour jitter on both images, deterministic in (seed, pair index). Off by default
      (the authors do not augment).
    seed: augmentation seed.
    errors: "raise" (PipelineError naming the file) or "skip" (drop the pair whole, count it in
      `skip_report`). Skipping shortens the stream, so in multi-host training hosts can disagree on
      the number of steps; use it for single-host runs or after cleaning the data.
    skip_report: filled when errors="skip".
    reader: optional path -> bytes callable replacing `tf.io.read_file` (e.g. `TfdsSource.read`
      for `tfds://` paths); decoding is unchanged.
    normalize: False yields uint8 images; normalize them with `normalize.normalize_on_device`.
    fast_decode: DCT-scaled JPEG decoding (see the module docstring; not bit-exact).
    num_parallel_calls: parallel image loads (default AUTOTUNE).

  Yields:
    {"im0": (B, H, W, 3) f32, "im1": (B, H, W, 3) f32, "label": (B,) f32}; uint8 images when
    normalize=False.
  """
  if errors not in ("raise", "skip"):
    raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
  path0, path1 = np.asarray(path0, str), np.asarray(path1, str)
  label = np.asarray(label, np.float32)
  if not len(path0) == len(path1) == len(label):
    raise ValueError(
        f"path0, path1 and label have {len(path0)}, {len(path1)} and {len(label)} rows")
  n = len(label)
  if reader is None and n:  # a registered source (e.g. tfds://...) or URLs: see default_reader
    reader = default_reader(path0[0])
  index = np.arange(n, dtype=np.int64)
  rows = tf.data.Dataset.from_tensor_slices(
      (index, path0, path1, label, np.full(n, seed, np.int64), index))
  ds = _pair_elements(rows, batch_size=batch_size, image_size=image_size, mean=mean, std=std,
                      resize_method=resize_method, augment=augment, reader=reader,
                      normalize=normalize, fast_decode=fast_decode,
                      num_parallel_calls=num_parallel_calls)
  return _checked(ds, n, batch_size, True, lambda i: [str(path0[i]), str(path1[i])],
                  lambda p: check_file(p, image_size, resize_method, reader), errors, skip_report)


@dataclasses.dataclass(frozen=True)
class EpochRows:
  """One epoch's pairs for `pair_stream`, in stream order.

  Attributes:
    path0: (P,) paths of the first image of each pair.
    path1: (P,) paths of the second image.
    label: (P,) graded labels.
    seed: augmentation seed of the epoch.
    position: (P,) int augmentation index of each pair (its place in the epoch's global order, so
      that a stream resumed mid-epoch, or another host, jitters each pair as a full run does).
  """
  path0: np.ndarray
  path1: np.ndarray
  label: np.ndarray
  seed: int
  position: np.ndarray

  def __post_init__(self):
    if not len(self.path0) == len(self.path1) == len(self.label) == len(self.position):
      raise ValueError(f"path0, path1, label and position have {len(self.path0)}, "
                       f"{len(self.path1)}, {len(self.label)} and {len(self.position)} rows")


class _Rows:
  """The rows that `pair_stream` has handed to tf.data: row i's paths for the gap check, until
  the consumer is past them. Filled by tf.data's generator thread, read by the consumer."""

  def __init__(self):
    self._lock = threading.Lock()
    self._epochs: list[tuple[int, EpochRows]] = []  # (first row, rows), in order
    self.total = 0
    self.error: BaseException | None = None

  def add(self, rows: EpochRows) -> int:
    with self._lock:
      start = self.total
      self._epochs.append((start, rows))
      self.total += len(rows.label)
      return start

  def paths(self, i: int) -> list[str]:
    with self._lock:
      for start, rows in reversed(self._epochs):
        if start <= i:
          j = i - start
          return [str(rows.path0[j]), str(rows.path1[j])]
    raise IndexError(f"row {i} of the stream is not held")

  def release(self, below: int) -> None:
    """Forgets the epochs whose rows all lie below `below`."""
    with self._lock:
      while len(self._epochs) > 1 and self._epochs[1][0] <= below:
        self._epochs.pop(0)


def pair_stream(epochs: Iterable[EpochRows], *, batch_size: int, image_size: Sequence[int],
                mean: Sequence[float], std: Sequence[float], resize_method: str = "pil",
                augment: bool = False, errors: str = "raise",
                skip_report: SkipReport | None = None, reader: ByteReader | None = None,
                normalize: bool = True, fast_decode: bool = False,
                num_parallel_calls: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """`pair_batches` over epoch after epoch in ONE tf.data pipeline (no rebuild, no drained
  buffers at epoch boundaries): the parallel loads of epoch e+1 start while the last batches of
  epoch e are still being consumed.

  `epochs` (possibly endless) is drawn lazily, from tf.data's own thread, when the rows before
  are all being loaded; its exceptions reach the consumer unchanged. Pair j of an epoch is
  jittered with seed (epoch.seed, 2 * position[j] (+1)), as `pair_batches(..., seed=epoch.seed)`
  does with its row index. When every epoch holds a multiple of `batch_size` pairs and no image
  fails (errors="raise"), the batches are exactly those of `pair_batches` run on each epoch in
  turn. With errors="skip", a dropped pair shifts the following rows, so a batch can then hold
  the end of one epoch and the start of the next (`pair_batches` per epoch would drop the
  epoch's partial last batch instead). Other arguments as in `pair_batches`.

  Yields:
    {"im0", "im1", "label"} batches of `batch_size` pairs, as `pair_batches`.
  """
  if errors not in ("raise", "skip"):
    raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
  epochs = (rows for rows in epochs if len(rows.label))
  first = next(epochs, None)
  if first is None:
    return
  if reader is None:  # a registered source (e.g. tfds://...) or URLs: see default_reader
    reader = default_reader(first.path0[0])
  held = _Rows()

  def generate():
    try:
      for rows in itertools.chain([first], epochs):
        n = len(rows.label)
        start = held.add(rows)
        yield (np.arange(start, start + n, dtype=np.int64),
               np.char.encode(np.asarray(rows.path0, str), "utf-8"),
               np.char.encode(np.asarray(rows.path1, str), "utf-8"),
               np.asarray(rows.label, np.float32), np.full(n, rows.seed, np.int64),
               np.asarray(rows.position, np.int64))
    except Exception as e:  # pylint: disable=broad-except
      held.error = e  # tf.data would swallow it (ignore_errors): re-raised by the consumer

  vector = lambda dtype: tf.TensorSpec([None], dtype)
  signature = (vector(tf.int64), vector(tf.string), vector(tf.string), vector(tf.float32),
               vector(tf.int64), vector(tf.int64))
  rows = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
  ds = _pair_elements(rows, batch_size=batch_size, image_size=image_size, mean=mean, std=std,
                      resize_method=resize_method, augment=augment, reader=reader,
                      normalize=normalize, fast_decode=fast_decode,
                      num_parallel_calls=num_parallel_calls)
  check = lambda p: check_file(p, image_size, resize_method, reader)

  def total() -> int:
    if held.error is not None:
      raise held.error
    return held.total

  yield from _checked(ds, total, batch_size, True, held.paths, check, errors, skip_report,
                      done=held.release)
  total()  # an error in `epochs` after the last rows


def tuple_batches(paths: np.ndarray, *, batch_size: int, image_size: Sequence[int],
                  mean: Sequence[float], std: Sequence[float], resize_method: str = "pil",
                  errors: str = "raise", skip_report: SkipReport | None = None,
                  reader: ByteReader | None = None, normalize: bool = True,
                  fast_decode: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Batches {images: (B, K, H, W, 3)} of tuples of K images (e.g. query, positive, negatives),
  in order; the last partial batch is dropped. Options as in `pair_batches`; with errors="skip"
  an unreadable image drops its whole tuple."""
  if errors not in ("raise", "skip"):
    raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
  paths = np.asarray(paths, str)
  if paths.ndim != 2:
    raise ValueError(f"paths must have shape (T, K), got {paths.shape}")
  n, k = paths.shape
  if reader is None and n:  # a registered source (e.g. tfds://...) or URLs: see default_reader
    reader = default_reader(paths[0, 0])
  ds = tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int64), paths))

  def load(i, p):
    images = [read_resized(p[j], image_size, resize_method, reader=reader,
                           fast_decode=fast_decode) for j in range(k)]
    return {"images": tf.stack(images), "_index": i}

  ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
  ds = ds.batch(batch_size, drop_remainder=True)
  if normalize:
    ds = ds.map(lambda b: {**b, "images": normalize_batch(b["images"], mean, std)},
                num_parallel_calls=AUTOTUNE)
  ds = ds.prefetch(AUTOTUNE)
  return _checked(ds, n, batch_size, True, lambda i: [str(x) for x in paths[i]],
                  lambda p: check_file(p, image_size, resize_method, reader), errors, skip_report)


def image_batches(paths: Sequence[str], *, batch_size: int, image_size: Sequence[int],
                  mean: Sequence[float], std: Sequence[float], resize_method: str = "pil",
                  reader: ByteReader | None = None, normalize: bool = True,
                  fast_decode: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Batches {image, mask} of all images in order; the last batch is padded and masked.

  An unreadable image raises PipelineError naming it (a skipped row would misalign descriptors).
  `reader`, `normalize` and `fast_decode` are as in `pair_batches`.
  """
  n = len(paths)
  if reader is None and n:  # a registered source (e.g. tfds://...) or URLs: see default_reader
    reader = default_reader(paths[0])
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  padded = np.concatenate([np.asarray(list(paths), str), np.asarray(list(paths[:1]) * pad, str)])
  mask = np.arange(len(padded)) < n
  ds = tf.data.Dataset.from_tensor_slices((np.arange(len(padded), dtype=np.int64), padded, mask))
  ds = ds.map(lambda i, p, m: {"image": read_resized(p, image_size, resize_method, reader=reader,
                                                     fast_decode=fast_decode),
                               "mask": m, "_index": i},
              num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
  ds = ds.batch(batch_size)
  if normalize:
    ds = ds.map(lambda b: {**b, "image": normalize_batch(b["image"], mean, std)},
                num_parallel_calls=AUTOTUNE)
  ds = ds.prefetch(AUTOTUNE)
  return _checked(ds, len(padded), batch_size, False, lambda i: [str(padded[i])],
                  lambda p: check_file(p, image_size, resize_method, reader), "raise", None)

"""The endless per-host streams of training batches, epoch after epoch, from any global step.

`PairStream` (gcl, contrastive): epoch e's pairs depend only on (seed, e) (gcl_jax.data.pairs), so
a stream started at step s yields exactly the batches that an uninterrupted run yields from step s
on. All epochs flow through one tf.data pipeline (`pipeline.pair_stream`), the next epoch's pairs
sampled in the background, so an epoch boundary does not stall the step; nothing depends on the
model, so a prefetcher may build its batches ahead (`can_run_ahead`). `TupleStream` (triplet):
tuples mined with the current model, sub-cache after sub-cache; the mined sub-caches are saved so
that resuming is exact too. Each host reads its own slice of every global batch
(`pipeline.host_indices`). `prefetch_to_device` turns a host stream into global device batches
built ahead in a background thread.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import jax
import ml_collections
import numpy as np

from gcl_jax import io, parallel
from gcl_jax.data import mining, pairs as pairs_lib, pipeline

BAD_IMAGES = {"error": "raise", "skip": "skip"}
T = TypeVar("T")


def pipeline_options(config: ml_collections.ConfigDict) -> dict:
  """Keyword arguments of the pipeline's batch functions chosen by config.data."""
  d = config.data
  return dict(image_size=tuple(d.image_size), mean=tuple(d.mean), std=tuple(d.std),
              resize_method=d.resize_method, fast_decode=d.fast_decode,
              normalize=not d.normalize_on_device)


def check_bad_images(value: str) -> str:
  if value not in BAD_IMAGES:
    raise ValueError(f"config.data.bad_images must be one of {sorted(BAD_IMAGES)}, got {value!r}")
  return BAD_IMAGES[value]


class PairStream:
  """Iterator over this host's batches {im0, im1, label} from global step `start_step` on.

  Attributes:
    skip_report: pairs dropped for unreadable images so far (config.data.bad_images="skip").
  """

  def __init__(self, config: ml_collections.ConfigDict, cities: list[pairs_lib.CityPairs],
               start_step: int, *, process_index: int, process_count: int):
    self.config = config
    self.cities = cities
    self.start_step = start_step
    self.process_index, self.process_count = process_index, process_count
    self.errors = check_bad_images(config.data.bad_images)
    self.skip_report = pipeline.SkipReport()
    self._batches = self._generate()

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._batches)

  images_forwarded = 0  # pairs need no mining
  can_run_ahead = True  # batches depend on (seed, step) only: they may be built ahead

  def epoch_pairs(self, epoch: int) -> pairs_lib.EpochPairs:
    s = self.config.sampler
    return pairs_lib.sample_epoch(
        self.cities, seed=self.config.seed, epoch=epoch,
        binary=self.config.loss.name == "contrastive", strata_probs=tuple(s.strata_probs),
        pos_threshold=s.pos_threshold, empty_stratum=s.empty_stratum, chunk_size=s.chunk_size)

  def epochs(self) -> Iterator[pipeline.EpochRows]:
    """This host's rows of epoch after epoch from `start_step` on (the first one cut at it); each
    epoch is sampled in a background thread while the one before is being streamed."""
    global_bs = self.config.train.batch_size
    local_bs = global_bs // self.process_count
    epoch, steps_done = 0, 0
    sampled = _in_background(self.epoch_pairs, epoch)
    while True:
      ep = sampled()
      sampled = _in_background(self.epoch_pairs, epoch + 1)
      n_steps = len(ep) // global_bs
      if n_steps == 0:
        raise ValueError(f"epoch {epoch} has {len(ep)} pairs, fewer than one batch of "
                         f"{global_bs}: add training cities or lower config.train.batch_size")
      if steps_done + n_steps > self.start_step:
        skip = max(0, self.start_step - steps_done)
        idx = pipeline.host_indices(n_steps * global_bs, global_bs, self.process_index,
                                    self.process_count)[skip * local_bs:]
        p0, p1 = ep.paths(self.cities)
        yield pipeline.EpochRows(p0[idx], p1[idx], ep.label[idx],
                                 seed=self.config.seed * 1_000_003 + epoch, position=idx)
      steps_done += n_steps
      epoch += 1

  def _generate(self) -> Iterator[dict[str, np.ndarray]]:
    # One tf.data pipeline for the whole run: epoch boundaries do not drain it.
    config = self.config
    return pipeline.pair_stream(
        self.epochs(), batch_size=config.train.batch_size // self.process_count,
        augment=config.data.augment_colour, errors=self.errors, skip_report=self.skip_report,
        **pipeline_options(config))


def _in_background(fn: Callable[[int], T], arg: int) -> Callable[[], T]:
  """Starts fn(arg) in a daemon thread; the returned function waits for its result (or raises
  its exception). An abandoned call ends on its own and never delays the exit."""
  box = {}

  def work():
    try:
      box["value"] = fn(arg)
    except BaseException as e:  # pylint: disable=broad-except
      box["error"] = e

  thread = threading.Thread(target=work, name=f"gcl-sample-{arg}", daemon=True)
  thread.start()

  def result() -> T:
    thread.join()
    if "error" in box:
      raise box["error"]
    return box["value"]

  return result


def mining_config(config: ml_collections.ConfigDict) -> mining.MiningConfig:
  """config.loss.mining as a MiningConfig (its margin is the toolkit's sqrt(m))."""
  m = config.loss.mining
  return mining.MiningConfig(num_negatives=m.num_negatives, cache_queries=m.cache_queries,
                             num_negative_samples=m.num_negative_samples,
                             margin=math.sqrt(m.margin), pos_dist_m=m.pos_dist_m,
                             neg_dist_m=m.neg_dist_m, keep_rule=m.keep_rule)


class TupleStream:
  """Iterator over this host's triplet batches {images: (B, 2 + N, H, W, 3)} from `start_step`.

  The queries of each epoch are walked in sub-caches (gcl_jax.data.mining); each sub-cache is mined
  with the current model (`embed`) right before its tuples are trained on, once. How many steps a
  sub-cache lasts depends on how many tuples it kept, so every mined sub-cache is saved under
  `cache_dir` (e<epoch>_s<subcache>.npz, by process 0) before training on it: a resumed stream
  reloads the sub-caches up to the one holding `start_step` (the model that mined them is gone)
  and mines the following ones with the current model. Resuming is therefore exact.

  Attributes:
    images_forwarded: images embedded for mining so far (reloaded sub-caches included).
    skip_report: tuples dropped for unreadable images (config.data.bad_images="skip").
  """

  def __init__(self, config: ml_collections.ConfigDict, cities: list[pairs_lib.CityPairs],
               start_step: int, *, embed: mining.Embed, cache_dir: str, process_index: int,
               process_count: int, write: bool):
    self.config, self.cities, self.start_step = config, cities, start_step
    self.embed, self.cache_dir, self.write = embed, cache_dir, write
    self.process_index, self.process_count = process_index, process_count
    self.mining = mining_config(config)
    self.errors = check_bad_images(config.data.bad_images)
    self.skip_report = pipeline.SkipReport()
    self.images_forwarded = 0
    self._batches = self._generate()

  # Not ahead of the step: the next sub-cache is mined with the model of the step just before it.
  can_run_ahead = False

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._batches)

  def _path(self, epoch: int, subcache: int) -> str:
    return io.join(self.cache_dir, f"e{epoch:04d}_s{subcache:05d}.npz")

  def _subcache(self, epoch: int, subcache: int, consumed: bool) -> mining.TupleCache:
    path = self._path(epoch, subcache)
    if consumed:  # trained on (at least partly) before the restart: its tuples are on disk
      if not io.exists(path):
        raise FileNotFoundError(
            f"{path}: the mined sub-cache {subcache} of epoch {epoch} is needed to resume at "
            f"step {self.start_step} but is missing (was {self.cache_dir} deleted?)")
      return mining.TupleCache.load(path)
    cache = mining.mine_subcache(self.cities, seed=self.config.seed, epoch=epoch,
                                 subcache=subcache, config=self.mining, embed=self.embed)
    if self.write:
      cache.save(path)
    return cache

  def _generate(self) -> Iterator[dict[str, np.ndarray]]:
    global_bs = self.config.train.batch_size
    local_bs = global_bs // self.process_count
    n_sub = mining.num_subcaches(self.cities, self.mining)
    steps_done, epoch = 0, 0
    while True:
      epoch_steps = 0
      for subcache in range(n_sub):
        cache = self._subcache(epoch, subcache, consumed=steps_done < self.start_step)
        self.images_forwarded += cache.images_forwarded
        n_steps = len(cache) // global_bs
        epoch_steps += n_steps
        if steps_done + n_steps > self.start_step:
          skip = max(0, self.start_step - steps_done)
          idx = pipeline.host_indices(n_steps * global_bs, global_bs, self.process_index,
                                      self.process_count)[skip * local_bs:]
          q, p, n = cache.paths(self.cities)
          tuples = np.concatenate([q[:, None], p[:, None], n], axis=1)
          yield from pipeline.tuple_batches(
              tuples[idx], batch_size=local_bs, errors=self.errors,
              skip_report=self.skip_report, **pipeline_options(self.config))
        steps_done += n_steps
      if epoch_steps == 0:
        raise ValueError(f"epoch {epoch} mined fewer tuples per sub-cache than one batch of "
                         f"{global_bs}: lower config.train.batch_size, raise "
                         "config.loss.mining.cache_queries or add training cities")
      epoch += 1


class _Failure:
  """A producer's exception, carried to the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


_END = object()


class DeviceBatches:
  """Global batches (`parallel.global_batch`) of a host batch stream, built `depth` ahead.

  With depth > 0 a daemon thread draws the next host batches and turns them into global
  jax.Arrays (the host-to-device copy included) while the step runs, keeping up to `depth` of
  them in a queue; an exception of the stream reaches `next` unchanged (same object, so the same
  type and message), after the batches before it. `close()` (or leaving a `with` block) stops the
  thread. depth = 0 builds each batch when asked, in the caller's thread.
  """

  def __init__(self, batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
               depth: int = 2):
    if depth < 0:
      raise ValueError(f"prefetch depth (config.data.prefetch_to_device) must be >= 0, got "
                       f"{depth}")
    self._batches, self._mesh, self.depth = batches, mesh, depth
    self._done = False
    self._stop = threading.Event()
    self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._thread = None
    if depth:
      self._thread = threading.Thread(target=self._produce, name="gcl-prefetch", daemon=True)
      self._thread.start()

  def __iter__(self) -> DeviceBatches:
    return self

  def __enter__(self) -> DeviceBatches:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self) -> None:
    try:
      for local in self._batches:
        if self._stop.is_set() or not self._put(parallel.global_batch(local, self._mesh)):
          return
      self._put(_END)
    except BaseException as e:  # pylint: disable=broad-except
      self._put(_Failure(e))

  def __next__(self) -> dict[str, jax.Array]:
    if self._done:
      raise StopIteration
    if self._thread is None:
      try:
        return parallel.global_batch(next(self._batches), self._mesh)
      except BaseException:
        self._done = True
        raise
    while True:
      try:
        item = self._queue.get(timeout=1.0)
        break
      except queue.Empty:
        if not self._thread.is_alive() and self._queue.empty():
          self._done = True
          raise RuntimeError("the prefetch thread ended without a batch") from None
    if item is _END or isinstance(item, _Failure):
      self._done = True
      if item is _END:
        raise StopIteration
      raise item.error
    return item

  def close(self, timeout: float = 10.0) -> None:
    """Stops the producer thread (waiting up to `timeout` s for the batch it is drawing)."""
    self._done = True
    self._stop.set()
    if self._thread is None:
      return
    while True:  # unblock a producer waiting on a full queue
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout)


def prefetch_to_device(batches: Iterator[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
                       depth: int = 2) -> DeviceBatches:
  """`DeviceBatches(batches, mesh, depth)`: global batches built `depth` ahead in a thread."""
  return DeviceBatches(batches, mesh, depth)

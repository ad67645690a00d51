"""The endless per-host streams of training batches, epoch after epoch, from any global step.

`PairStream` (gcl, contrastive): epoch e's pairs depend only on (seed, e) (gcl_jax.data.pairs), so
a stream started at step s yields exactly the batches that an uninterrupted run yields from step s
on. `TupleStream` (triplet): tuples mined with the current model, sub-cache after sub-cache; the
mined sub-caches are saved so that resuming is exact too. Each host reads its own slice of every
global batch (`pipeline.host_indices`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import ml_collections
import numpy as np

from gcl_jax import io
from gcl_jax.data import mining, pairs as pairs_lib, pipeline

BAD_IMAGES = {"error": "raise", "skip": "skip"}


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

  def epoch_pairs(self, epoch: int) -> pairs_lib.EpochPairs:
    s = self.config.sampler
    return pairs_lib.sample_epoch(
        self.cities, seed=self.config.seed, epoch=epoch,
        binary=self.config.loss.name == "contrastive", strata_probs=tuple(s.strata_probs),
        pos_threshold=s.pos_threshold, empty_stratum=s.empty_stratum, chunk_size=s.chunk_size)

  def _generate(self) -> Iterator[dict[str, np.ndarray]]:
    config = self.config
    global_bs = config.train.batch_size
    local_bs = global_bs // self.process_count
    epoch, steps_done = 0, 0
    while True:
      ep = self.epoch_pairs(epoch)
      n_steps = len(ep) // global_bs
      if n_steps == 0:
        raise ValueError(f"epoch {epoch} has {len(ep)} pairs, fewer than one batch of "
                         f"{global_bs}: add training cities or lower config.train.batch_size")
      if steps_done + n_steps > self.start_step:
        skip = max(0, self.start_step - steps_done)
        idx = pipeline.host_indices(n_steps * global_bs, global_bs, self.process_index,
                                    self.process_count)[skip * local_bs:]
        p0, p1 = ep.paths(self.cities)
        yield from pipeline.pair_batches(
            p0[idx], p1[idx], ep.label[idx], batch_size=local_bs,
            augment=config.data.augment_colour, seed=config.seed * 1_000_003 + epoch,
            errors=self.errors, skip_report=self.skip_report, **pipeline_options(config))
      steps_done += n_steps
      epoch += 1


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

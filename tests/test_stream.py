"""The training streams: one tf.data pipeline across epochs equals the per-epoch construction, from
any start step and on any host; the device prefetcher keeps order, errors and stops cleanly."""

import dataclasses
import itertools
import pathlib
import threading
import time

import jax
import numpy as np
import pytest
from PIL import Image

from configs import default
from gcl_jax import parallel
from gcl_jax.data import pipeline, stream as stream_lib
from gcl_jax.data.pairs import CityPairs
from gcl_jax.labels.fov2d import city_pair_table
from gcl_jax.labels.synthetic_city import street_city

BATCH = 8


@pytest.fixture(scope="module")
def cities(tmp_path_factory) -> list[CityPairs]:
  """Two small street cities whose images exist on disk: image k is uniformly coloured
  (k % 256, k // 256, 7), so a batch shows which images it holds."""
  root = tmp_path_factory.mktemp("cities")
  out, k = [], 0
  for name, seed, origin in (("a", 0, (500_000.0, 5_000_000.0)),
                             ("b", 1, (600_000.0, 5_000_000.0))):
    q, db = street_city(40, 120, pano_every=7, seed=seed, origin=origin)
    q = dataclasses.replace(q, root=str(root / name))
    db = dataclasses.replace(db, root=str(root / name))
    for path in q.full_paths() + db.full_paths():
      pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(np.full((6, 8, 3), (k % 256, k // 256, 7), np.uint8)).save(path)
      k += 1
    out.append(CityPairs(name, q, db, city_pair_table(q, db)))
  return out


def stream_config(augment: bool = False, bad_images: str = "error"):
  c = default.get_config()
  c.data.image_size = (6, 8)
  c.data.augment_colour = augment
  c.data.bad_images = bad_images
  c.train.batch_size = BATCH
  return c


def per_epoch_reference(config, cities, num_epochs: int, process_index: int = 0,
                        process_count: int = 1) -> list[dict]:
  """The batches of each epoch built independently by `pair_batches`, concatenated."""
  ref = stream_lib.PairStream(config, cities, 0, process_index=0, process_count=1)
  out = []
  for epoch in range(num_epochs):
    ep = ref.epoch_pairs(epoch)
    n_steps = len(ep) // BATCH
    idx = pipeline.host_indices(n_steps * BATCH, BATCH, process_index, process_count)
    p0, p1 = ep.paths(cities)
    out += list(pipeline.pair_batches(
        p0[idx], p1[idx], ep.label[idx], batch_size=BATCH // process_count,
        augment=config.data.augment_colour, seed=config.seed * 1_000_003 + epoch,
        **stream_lib.pipeline_options(config)))
  return out


def epoch_lengths(config, cities, num_epochs: int) -> list[int]:
  ref = stream_lib.PairStream(config, cities, 0, process_index=0, process_count=1)
  return [len(ref.epoch_pairs(e)) // BATCH for e in range(num_epochs)]


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert set(g) == set(w) == {"im0", "im1", "label"}
    for k in w:
      np.testing.assert_array_equal(g[k], w[k])


def test_stream_across_epochs_equals_the_per_epoch_construction(cities):
  config = stream_config()
  steps = epoch_lengths(config, cities, 3)
  assert steps[0] >= 3 and steps[1] >= 3  # a few steps per epoch: boundaries are crossed
  want = per_epoch_reference(config, cities, 3)
  got = list(itertools.islice(stream_lib.PairStream(config, cities, 0, process_index=0,
                                                    process_count=1), sum(steps)))
  assert_same_batches(got, want)
  assert got[0]["im0"].dtype == np.uint8  # normalized on device by default
  # Consecutive epochs draw different pairs (the boundary is not a repeat of epoch 0).
  assert not np.array_equal(got[steps[0]]["im1"], got[0]["im1"])


def test_stream_from_a_step_in_the_middle_of_epoch_1_with_augmentation(cities):
  config = stream_config(augment=True)
  steps = epoch_lengths(config, cities, 3)
  want = per_epoch_reference(config, cities, 3)
  start = steps[0] + steps[1] // 2  # mid epoch 1; the stream then crosses into epoch 2
  got = list(itertools.islice(stream_lib.PairStream(config, cities, start, process_index=0,
                                                    process_count=1), sum(steps) - start))
  # Jitter depends on the pair's place in its epoch, not on where the stream started.
  assert_same_batches(got, want[start:])
  plain = per_epoch_reference(stream_config(), cities, 1)
  assert np.abs(want[0]["im0"].astype(int) - plain[0]["im0"]).max() > 0


def test_hosts_read_their_slices_of_the_global_batches(cities):
  config = stream_config(augment=True)
  steps = epoch_lengths(config, cities, 2)
  n = sum(steps) - 1
  whole = list(itertools.islice(
      stream_lib.PairStream(config, cities, 1, process_index=0, process_count=1), n))
  hosts = [list(itertools.islice(
      stream_lib.PairStream(config, cities, 1, process_index=h, process_count=2), n))
           for h in range(2)]
  for b, (h0, h1) in zip(whole, zip(*hosts)):
    for k in b:
      np.testing.assert_array_equal(np.concatenate([h0[k], h1[k]]), b[k])


def test_epoch_with_fewer_pairs_than_a_batch_raises(cities):
  config = stream_config()
  config.train.batch_size = 4096
  with pytest.raises(ValueError, match="epoch 0 has .* fewer than one batch of 4096"):
    next(stream_lib.PairStream(config, cities, 0, process_index=0, process_count=1))


def query_path(config, cities, row: int) -> str:
  """The query image of pair `row` of epoch 0 (a query is drawn once per epoch)."""
  ep = stream_lib.PairStream(config, cities, 0, process_index=0, process_count=1).epoch_pairs(0)
  p0, p1 = ep.paths(cities)
  path = str(p0[row])
  assert np.sum(p0 == path) == 1 and not np.any(p1 == path)
  return path


def test_bad_image_error_through_the_prefetcher_names_the_file(cities, tmp_path):
  config = stream_config()
  bad = query_path(config, cities, 3 * BATCH + 2)  # in the 4th batch of epoch 0
  moved = pathlib.Path(tmp_path) / "moved.png"
  pathlib.Path(bad).rename(moved)
  try:
    mesh = parallel.make_mesh()
    pairs = stream_lib.PairStream(config, cities, 0, process_index=0, process_count=1)
    with stream_lib.prefetch_to_device(pairs, mesh, 2) as batches:
      for _ in range(3):  # the batches before the bad one arrive first
        assert next(batches)["im0"].shape == (BATCH, 6, 8, 3)
      with pytest.raises(pipeline.PipelineError, match=f"element {3 * BATCH + 2} .*{bad}"):
        next(batches)
      with pytest.raises(StopIteration):
        next(batches)
  finally:
    moved.rename(bad)


def test_skipped_pairs_are_counted_across_epochs(cities, tmp_path):
  config = stream_config(bad_images="skip")
  bad = query_path(config, cities, 5)
  steps = epoch_lengths(config, cities, 3)
  ref = stream_lib.PairStream(config, cities, 0, process_index=0, process_count=1)
  uses = 0
  for e in range(2):
    p0, p1 = ref.epoch_pairs(e).paths(cities)
    uses += int(np.sum((p0[:steps[e] * BATCH] == bad) | (p1[:steps[e] * BATCH] == bad)))
  moved = pathlib.Path(tmp_path) / "moved.png"
  pathlib.Path(bad).rename(moved)
  try:
    pairs = stream_lib.PairStream(config, cities, 0, process_index=0, process_count=1)
    # Through epochs 0 and 1 (the dropped pairs shift the rest by `uses` rows), into epoch 2.
    list(itertools.islice(pairs, steps[0] + steps[1]))
    assert pairs.skip_report.skipped == uses >= 1
    assert all(bad in f for f in pairs.skip_report.files)
  finally:
    moved.rename(bad)


# ----- the device prefetcher ----------------------------------------------------------------------


def host_batches(n: int):
  for i in range(n):
    yield {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3) + 100 * i,
           "y": np.full((8,), i, np.int32)}


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_prefetcher_yields_the_same_global_arrays_in_order(depth):
  mesh = parallel.make_mesh()
  with stream_lib.prefetch_to_device(host_batches(5), mesh, depth) as batches:
    got = list(batches)
  want = list(host_batches(5))
  assert len(got) == 5
  for g, w in zip(got, want):
    assert isinstance(g["x"], jax.Array) and g["x"].sharding == parallel.batch_sharded(mesh)
    np.testing.assert_array_equal(np.asarray(g["x"]), w["x"])
    np.testing.assert_array_equal(np.asarray(g["y"]), w["y"])


class Broken(Exception):
  pass


@pytest.mark.parametrize("depth", [0, 2])
def test_prefetcher_raises_the_producers_exception(depth):
  def failing():
    yield from host_batches(2)
    raise Broken("cannot load element 17 of the stream: /data/x.jpg: truncated")

  batches = stream_lib.prefetch_to_device(failing(), parallel.make_mesh(), depth)
  assert [int(np.asarray(next(batches)["y"])[0]) for _ in range(2)] == [0, 1]
  with pytest.raises(Broken, match=r"element 17 of the stream: /data/x\.jpg: truncated"):
    next(batches)
  with pytest.raises(StopIteration):
    next(batches)
  batches.close()


def prefetch_threads() -> list[threading.Thread]:
  return [t for t in threading.enumerate() if t.name == "gcl-prefetch"]


def test_prefetcher_thread_ends_after_close():
  assert not prefetch_threads()
  drawn = []

  def endless():
    for i in itertools.count():
      drawn.append(i)
      yield {"y": np.full((8,), i, np.int32)}

  batches = stream_lib.prefetch_to_device(endless(), parallel.make_mesh(), 2)
  assert int(np.asarray(next(batches)["y"])[0]) == 0
  deadline = time.time() + 10
  while len(drawn) < 4 and time.time() < deadline:  # 2 queued + 1 waiting to be queued
    time.sleep(0.01)
  time.sleep(0.2)
  assert len(drawn) == 4  # bounded run-ahead: the producer blocks on the full queue
  batches.close()
  assert not prefetch_threads()
  with pytest.raises(StopIteration):
    next(batches)


def test_prefetcher_thread_ends_when_the_loop_raises():
  with pytest.raises(Broken):
    with stream_lib.prefetch_to_device(host_batches(100), parallel.make_mesh(), 2) as batches:
      next(batches)
      raise Broken("the training step failed")
  assert not prefetch_threads()

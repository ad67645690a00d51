"""Training from a prepared TFDS dataset: tables from metadata, images from the stored bytes."""

import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gcl_jax.data import msls, normalize, pipeline, tfds_source
from gcl_jax.data.tfds_builders import GclMsls

MEAN, STD = pipeline.IMAGENET_MEAN, pipeline.IMAGENET_STD
SIZE = (12, 16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(manual MSLS tree with photo-like JPEGs of varied sizes, data_dir with gcl_msls built)."""
  from conftest import DATA  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("tfds_source")
  manual = tmp / "msls"
  shutil.copytree(DATA / "tfds_dummy" / "msls", manual)
  rng = np.random.default_rng(0)
  for i, path in enumerate(sorted((manual / "train_val" / "cph").glob("*/images/*.jpg"))):
    h, w = (30 + 7 * i, 40 + 5 * i)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1)
    img = img + rng.integers(0, 40, (h, w, 3))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=85)
  data_dir = tmp / "tfds"
  GclMsls(data_dir=str(data_dir), file_format="tfrecord").download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return manual, data_dir


def _assert_same_table(got, want):
  assert got.name == want.name
  assert len(got) == len(want)
  np.testing.assert_array_equal(got.keys, want.keys)
  np.testing.assert_array_equal(got.utm, want.utm)
  np.testing.assert_array_equal(got.heading, want.heading)  # NaN where unknown, same places
  np.testing.assert_array_equal(got.pano, want.pano)
  np.testing.assert_array_equal(got.night, want.night)
  np.testing.assert_array_equal(got.in_all, want.in_all)


def test_tables_match_msls_reader(built):
  manual, data_dir = built
  tables = tfds_source.read_tfds_tables("gcl_msls", str(data_dir), ["cph"])
  query, database = tables["cph"]
  ref_q, ref_db = msls.read_msls_city(str(manual), "cph")
  _assert_same_table(query, ref_q)
  _assert_same_table(database, ref_db)
  assert query.full_paths()[1] == "tfds://gcl_msls/1.0.0/cph_query/1"
  test_q, _ = tfds_source.TfdsSource("gcl_msls", str(data_dir)).city("miami", "test",
                                                                     with_images=False)
  assert np.isnan(test_q.utm).all() and len(test_q) == 1


@pytest.mark.parametrize("cache", [False, True])
def test_pair_batches_from_tfds_bytes_equal_files(built, tmp_path, cache):
  manual, data_dir = built
  cache_dir = str(tmp_path / "cache") if cache else None
  source = tfds_source.TfdsSource("gcl_msls", str(data_dir), cache_dir=cache_dir)
  query, database = source.city("cph")
  ref_q, ref_db = msls.read_msls_city(str(manual), "cph")
  for t, ref in ((query, ref_q), (database, ref_db)):
    for p, f in zip(t.full_paths(), ref.full_paths()):
      assert source.read(p) == open(f, "rb").read()  # stored bytes, never re-encoded
  assert source.nbytes == sum(len(open(f, "rb").read())
                              for f in ref_q.full_paths() + ref_db.full_paths())
  q, d = np.array([0, 1, 1, 0]), np.array([2, 0, 1, 1])
  label = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
  kw = dict(batch_size=2, image_size=SIZE, mean=MEAN, std=STD)
  from_files = list(pipeline.pair_batches(np.array(ref_q.full_paths())[q],
                                          np.array(ref_db.full_paths())[d], label, **kw))
  from_tfds = list(pipeline.pair_batches(np.array(query.full_paths())[q],
                                         np.array(database.full_paths())[d], label,
                                         reader=source.read, **kw))
  assert len(from_tfds) == len(from_files) == 2
  for a, b in zip(from_tfds, from_files):
    for k in ("im0", "im1", "label"):
      np.testing.assert_array_equal(a[k], b[k])
  # The "tf" back-end and the uint8 stream take the reader too.
  raw = next(pipeline.pair_batches(np.array(query.full_paths())[q],
                                   np.array(database.full_paths())[d], label, reader=source.read,
                                   normalize=False, **kw))
  assert raw["im0"].dtype == np.uint8
  np.testing.assert_array_equal(normalize.normalize_array(raw["im0"], MEAN, STD),
                                from_files[0]["im0"])
  tf_a = next(pipeline.pair_batches(np.array(query.full_paths())[q],
                                    np.array(database.full_paths())[d], label,
                                    reader=source.read, resize_method="tf", **kw))
  tf_b = next(pipeline.pair_batches(np.array(ref_q.full_paths())[q],
                                    np.array(ref_db.full_paths())[d], label, resize_method="tf",
                                    **kw))
  np.testing.assert_array_equal(tf_a["im1"], tf_b["im1"])
  images = np.concatenate([b["image"] for b in pipeline.image_batches(
      database.full_paths(), batch_size=2, image_size=SIZE, mean=MEAN, std=STD,
      reader=source.read)])
  ref_images = np.concatenate([b["image"] for b in pipeline.image_batches(
      ref_db.full_paths(), batch_size=2, image_size=SIZE, mean=MEAN, std=STD)])
  np.testing.assert_array_equal(images, ref_images)
  if cache:  # a second source reuses the materialised files without reading TFRecords
    again = tfds_source.TfdsSource("gcl_msls", str(data_dir), cache_dir=cache_dir)
    _assert_same_table(again.city("cph")[1], ref_db)
    assert again.read(database.full_paths()[2]) == open(ref_db.full_paths()[2], "rb").read()


def test_errors_name_what_is_wrong(built, tmp_path):
  _, data_dir = built
  source = tfds_source.TfdsSource("gcl_msls", str(data_dir))
  with pytest.raises(msls.DatasetError, match="no split 'oslo_query'"):
    source.city("oslo")
  with pytest.raises(msls.DatasetError, match="split 'train_val', expected 'test'"):
    source.city("cph", "test", with_images=False)
  with pytest.raises(KeyError, match="split 'cph_query' is not loaded"):
    source.read("tfds://gcl_msls/1.0.0/cph_query/0")
  query, _ = source.city("cph")
  with pytest.raises(KeyError, match="index 7 out of range"):
    source.read("tfds://gcl_msls/1.0.0/cph_query/7")
  paths = np.array(query.full_paths() * 2)
  paths[3] = "tfds://gcl_msls/1.0.0/cph_query/9"
  with pytest.raises(pipeline.PipelineError, match="element 3 .*cph_query/9.*out of range"):
    list(pipeline.pair_batches(paths, paths, np.zeros(4), batch_size=2, image_size=SIZE,
                               mean=MEAN, std=STD, reader=source.read))
  with pytest.raises(msls.DatasetError, match="not prepared"):
    tfds_source.TfdsSource("gcl_msls", str(tmp_path / "empty"))
  assert "cph_query" in source.load_seconds

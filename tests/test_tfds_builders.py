"""TFDS builders: offline builds of the dummy trees in tests/data/tfds_dummy into tmp_path."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from gcl_jax.data import at_format, msls, msls_test_cities
from gcl_jax.data.tfds_builders import GclAtFormat, GclMsls


def _build(cls, manual_dir, data_dir):
  builder = cls(data_dir=str(data_dir), file_format="tfrecord")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _rows(builder, split):
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return list(tfds.as_numpy(ds))


def test_msls_builder_matches_reader(data_dir, tmp_path):
  manual = data_dir / "tfds_dummy" / "msls"
  builder = _build(GclMsls, manual, tmp_path)
  assert builder.name == "gcl_msls"
  assert set(builder.info.splits) == {"cph_query", "cph_database", "miami_query",
                                      "miami_database"}
  assert builder.info.splits["cph_database"].num_examples == 3
  for side in ("query", "database"):
    ref = msls.read_msls_side(str(manual), "cph", side)
    rows = _rows(builder, f"cph_{side}")
    assert [r["index"] for r in rows] == list(range(len(ref)))  # row order kept
    assert [r["key"].decode() for r in rows] == list(ref.keys)
    assert [r["path"].decode() for r in rows] == list(ref.paths)
    np.testing.assert_array_equal(np.stack([r["utm"] for r in rows]), ref.utm)
    np.testing.assert_array_equal([r["heading"] for r in rows], ref.heading)  # NaN for panoramas
    assert [bool(r["pano"]) for r in rows] == list(ref.pano)
    assert [bool(r["night"]) for r in rows] == list(ref.night)
    assert all(r["split"] == b"train_val" and r["city"] == b"cph" for r in rows)
    for r, p in zip(rows, ref.full_paths()):
      assert r["image"] == open(p, "rb").read()  # the encoded JPEG, byte for byte
  # Decoded access works too and gives the 8x8 images.
  img = next(iter(tfds.as_numpy(builder.as_dataset(split="cph_query"))))["image"]
  assert img.shape == (8, 8, 3)
  test_rows = _rows(builder, "miami_database")
  ref = msls_test_cities.read_msls_test_side(str(manual), "miami", "database")
  assert [r["key"].decode() for r in test_rows] == list(ref.keys)
  assert all(np.isnan(r["utm"]).all() and math.isnan(r["heading"]) for r in test_rows)


def test_at_format_builder_matches_reader(data_dir, tmp_path):
  manual = data_dir / "tfds_dummy" / "at_format"
  builder = _build(GclAtFormat, manual, tmp_path)
  assert set(builder.info.splits) == {"test_queries", "test_database"}
  for side in ("queries", "database"):
    ref = at_format.read_at_format(str(manual), "test", side)
    rows = _rows(builder, f"test_{side}")
    assert [r["path"].decode() for r in rows] == list(ref.paths)
    np.testing.assert_array_equal(np.stack([r["utm"] for r in rows]), ref.utm)
    np.testing.assert_array_equal([r["heading"] for r in rows], ref.heading)
    assert all(r["city"] == b"at_format" and not r["pano"] for r in rows)
    for r, p in zip(rows, ref.full_paths()):
      assert r["image"] == open(p, "rb").read()
  assert np.isnan([r["heading"] for r in _rows(builder, "test_queries")]).sum() == 1


def test_builders_need_manual_dir_layout(tmp_path):
  (tmp_path / "manual").mkdir()
  # Empty manual dir: tfds itself stops and prints our instructions.
  with pytest.raises(AssertionError, match="train_val/<city>"):
    _build(GclMsls, tmp_path / "manual", tmp_path / "out")
  (tmp_path / "manual" / "README.txt").write_text("not a dataset")
  with pytest.raises(msls.DatasetError, match="manual: no MSLS city folders"):
    _build(GclMsls, tmp_path / "manual", tmp_path / "out")
  with pytest.raises(msls.DatasetError, match="manual: no images/"):
    _build(GclAtFormat, tmp_path / "manual", tmp_path / "out2")
  assert "train_val" in GclMsls.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert "images/{train,val,test}" in GclAtFormat.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_streaming_into_pipeline(data_dir, tmp_path):
  """Encoded bytes from tfds go through the same decode/resize as files on disk."""
  from gcl_jax.data import pipeline
  manual = data_dir / "tfds_dummy" / "at_format"
  builder = _build(GclAtFormat, manual, tmp_path)
  ds = builder.as_dataset(split="test_database", decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: pipeline.normalize(
      pipeline.resize(pipeline.decode_rgb(ex["image"]), (4, 6)), pipeline.IMAGENET_MEAN,
      pipeline.IMAGENET_STD))
  got = np.stack(list(tfds.as_numpy(ds)))
  ref = at_format.read_at_format(str(manual), "test", "database")
  want = np.stack([pipeline.load_image(tf.constant(p), (4, 6), pipeline.IMAGENET_MEAN,
                                       pipeline.IMAGENET_STD).numpy() for p in ref.full_paths()])
  np.testing.assert_array_equal(got, want)


def test_module_cli_builds(data_dir, tmp_path, capsys):
  from gcl_jax.data.tfds_builders import __main__ as cli
  assert cli.main(["gcl_at_format", f"--manual_dir={data_dir / 'tfds_dummy' / 'at_format'}",
                   f"--data_dir={tmp_path}"]) == 0
  out = capsys.readouterr().out
  assert "gcl_at_format test_database: 3 examples" in out
  ds = tfds.load("gcl_at_format", split="test_queries", data_dir=str(tmp_path))
  assert len(list(ds)) == 2


@pytest.mark.parametrize("argv, message", [
    (["gcl_msls", "--data_dir=d"], "flag --manual_dir=None: Flag --manual_dir must have a value"),
    (["--manual_dir=m", "--data_dir=d"], "expected one dataset name, one of gcl_at_format, "
     "gcl_msls; got none"),
    (["gcl_nope", "--manual_dir=m", "--data_dir=d"], "one of gcl_at_format, gcl_msls; got "
     "'gcl_nope'"),
    (["gcl_msls", "--manual_dir=m", "--data_dir=d", "--fromat=x"], "Unknown command line flag "
     "'fromat'"),
])
def test_module_cli_errors(capsys, argv, message):
  """A bad command line prints one line naming the fault, builds nothing and returns 2."""
  from gcl_jax.data.tfds_builders import __main__ as cli
  assert cli.main(argv) == 2
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert captured.out == "" and len(err) == 1, err
  assert err[0].startswith("python -m gcl_jax.data.tfds_builders: error: ") and message in err[0]
  assert cli.main(["--help"]) == 0
  assert "--manual_dir" in capsys.readouterr().out

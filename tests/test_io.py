"""gcl_jax.io on local paths (the bucket side is tests/test_storage_emulator.py), and the
TensorBoard events that MetricsLog writes through it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gcl_jax import io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_atomic_write_with_writes_what_the_writer_writes(tmp_path):
  target = tmp_path / "sub" / "a.npy"
  assert io.atomic_write_with(target, lambda f: np.save(f, np.arange(4))) == str(target)
  np.testing.assert_array_equal(np.load(target), np.arange(4))
  assert os.listdir(tmp_path / "sub") == ["a.npy"]  # no temporary file left behind


def test_atomic_write_with_a_failing_writer_keeps_the_old_file(tmp_path):
  target = tmp_path / "a.bin"
  io.atomic_write(target, b"old")

  def fail(f):
    f.write(b"half")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    io.atomic_write_with(target, fail)
  assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]


def test_append_read_remove(tmp_path):
  log = tmp_path / "d" / "log.jsonl"
  io.append_text(log, "a\n")
  io.append_bytes(log, b"b\n")
  assert io.read_text(log) == "a\nb\n" and io.read_bytes(log) == b"a\nb\n"
  io.remove(log)
  io.remove(log)  # already gone: no error
  with pytest.raises(FileNotFoundError):
    io.remove(log, missing_ok=False)
  assert not io.exists(log)
  assert io.join("gs://b/run", "x", "y.json") == "gs://b/run/x/y.json"
  assert io.absolute("gs://b/run") == "gs://b/run"
  assert io.absolute("rel") == os.path.join(os.getcwd(), "rel")


def test_urls_go_through_fsspec_not_tf_gfile():
  """One client for every URL: etils.epath (also orbax's) resolves URLs with fsspec once
  gcl_jax.io is imported, unless EPATH_USE_TF says otherwise (s3://: etils would look up a gs://
  bucket's layout on the network before choosing tf.io.gfile)."""
  code = ("from etils import epath; epath.Path('/tmp').exists(); import gcl_jax.io; "
          "print(type(epath.Path('s3://bucket/x')._backend).__name__)")
  env = {k: v for k, v in os.environ.items() if k != "EPATH_USE_TF"}
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out[-1] == "_FileSystemSpecBackend"
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "EPATH_USE_TF": "1"},
                       check=True, capture_output=True, text=True).stdout.split()
  assert out[-1] == "_TfBackend"


def _records():
  return [{"step": 2, "loss": 0.5, "learning_rate": 1e-3, "images_backward": 32},
          {"step": 4, "loss": 0.25, "learning_rate": 2e-3, "images_backward": 64}]


@pytest.mark.parametrize("max_bytes", [1 << 20, 1])
def test_metrics_log_writes_tensorboard_scalars(tmp_path, max_bytes):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from gcl_jax.train.train import MetricsLog  # pylint: disable=g-import-not-at-top

  log = MetricsLog(str(tmp_path), max_event_file_bytes=max_bytes)
  for record in _records():
    log.write(record)
  log.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == _records()
  files = sorted(os.listdir(tmp_path / "tensorboard"))
  assert len(files) == (1 if max_bytes > 1 else 2)  # a new file once one passes max_bytes
  assert all(f.startswith("events.out.tfevents.") and f.endswith(".v2") for f in files)

  acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  assert sorted(acc.Tags()["tensors"]) == ["images_backward", "learning_rate", "loss"]
  for tag in ("loss", "learning_rate", "images_backward"):
    events = acc.Tensors(tag)
    assert [e.step for e in events] == [2, 4]
    got = [float(np.asarray(e.tensor_proto.float_val)[0]) for e in events]
    assert got == pytest.approx([r[tag] for r in _records()], rel=1e-7)

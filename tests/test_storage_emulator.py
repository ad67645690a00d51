"""A workdir in a bucket: the demo world, every output of training and evaluation reach it, none
stays locally.

A Google Cloud Storage emulator (gcp-storage-emulator, in a subprocess on a free port) stands in
for gs://. gcl_jax.io reaches it through gcsfs (STORAGE_EMULATOR_HOST); orbax writes its arrays
with tensorstore (TENSORSTORE_GCS_HTTP_URL) and its metadata through the same etils.epath. The
metadata server is pointed at a closed port, so nothing tries the network. gcsfs is imported only
once GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false is set (see the fixture).

One shortcoming of the emulator (gcp-storage-emulator 2026.7.19) is patched where it is started
(`_EMULATOR`): its media downloads carry no `x-goog-generation` header, which tensorstore's gcs
driver reads as the object's generation (without it, OCDBT's next read of its manifest fails with
"Malformed StorageGeneration"). The emulator also ignores generation preconditions
(ifGenerationMatch), harmless with one writing process.
"""

import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pytest

for _package in ("gcp_storage_emulator", "gcsfs"):
  if importlib.util.find_spec(_package) is None:
    pytest.skip(f"{_package} is not installed (see requirements.txt)", allow_module_level=True)

from gcl_jax import io  # pylint: disable=g-import-not-at-top

BUCKET = "gcl-test"

_EMULATOR = """
import sys
from gcp_storage_emulator.handlers import objects
_download = objects.download
def download(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if response.status in (200, 206):
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
objects.download = download
from gcp_storage_emulator.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
  """gs://<BUCKET> served by the emulator for the tests of this module; yields the URL prefix."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen(
      [sys.executable, "-c", _EMULATOR, "start", "--host=127.0.0.1",
       f"--port={port}", "--in-memory", f"--default-bucket={BUCKET}", "--quiet"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(url, timeout=1).close()
        break
      except OSError:
        if server.poll() is not None or time.time() > deadline:
          raise RuntimeError(f"the storage emulator did not start on {url}")
        time.sleep(0.2)
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv("STORAGE_EMULATOR_HOST", url)  # gcsfs (and google-cloud-storage)
      mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)  # tensorstore's gcs driver (orbax arrays)
      mp.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # no credential look-ups on the network
      mp.setenv("GCE_METADATA_ROOT", "127.0.0.1:9")
      # gcsfs's default file system asks the storage-control API for the bucket's layout (zonal,
      # hierarchical) on every call that it cannot answer; the emulator has no such API.
      mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
      _forget_clients()
      yield f"gs://{BUCKET}"
      _forget_clients()
  finally:
    server.terminate()
    server.wait(timeout=30)


def _forget_clients() -> None:
  """Drops cached gcsfs clients, so the next one reads the current STORAGE_EMULATOR_HOST."""
  import gcsfs  # pylint: disable=g-import-not-at-top
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  gcsfs.GCSFileSystem.clear_instance_cache()
  backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def _bucket_files(prefix: str) -> dict[str, int]:
  """{path relative to prefix: size} of every object under `prefix`."""
  out = {}
  for dirpath, _, filenames in io.walk(prefix):
    for name in filenames:
      full = io.join(dirpath, name)
      out[full[len(prefix) + 1:]] = io.path(full).stat().length
  return out


def _local_files(top) -> dict[str, tuple[int, int]]:
  """{relative path: (size, mtime_ns)} of every file and directory under `top`."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(top):
    for name in dirnames + filenames:
      full = os.path.join(dirpath, name)
      st = os.stat(full)
      out[os.path.relpath(full, top)] = (st.st_size if name in filenames else -1, st.st_mtime_ns)
  return out


def _events(data: bytes) -> list:
  """The Event protos of a TFRecord-framed event file, checking both CRCs of every record."""
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # pylint: disable=g-import-not-at-top
  events, pos = [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[pos + 8:pos + 12])
    assert header_crc == masked_crc32c(header)
    body = data[pos + 12:pos + 12 + length]
    assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(body)
    events.append(event_pb2.Event.FromString(body))
    pos += 16 + length
  return events


def test_io_primitives_on_the_bucket(gcs, tmp_path):
  base = f"{gcs}/prims"
  assert not io.exists(base)
  io.atomic_write(io.join(base, "a", "x.txt"), "hello")
  io.write_json(io.join(base, "a", "y.json"), {"k": [1, 2]})
  io.atomic_write_with(io.join(base, "b.npy"), lambda f: np.save(f, np.arange(5)))
  io.append_text(io.join(base, "log.jsonl"), "1\n")
  io.append_text(io.join(base, "log.jsonl"), "2\n")
  assert io.read_text(io.join(base, "a", "x.txt")) == "hello"
  assert io.read_json(io.join(base, "a", "y.json")) == {"k": [1, 2]}
  np.testing.assert_array_equal(np.load(io.open(io.join(base, "b.npy"), "rb")), np.arange(5))
  assert io.read_text(io.join(base, "log.jsonl")) == "1\n2\n"
  assert io.isdir(io.join(base, "a")) and not io.isdir(io.join(base, "b.npy"))
  assert sorted(io.listdir(base)) == ["a", "b.npy", "log.jsonl"]
  assert _bucket_files(base) == {"a/x.txt": 5, "a/y.json": len(io.read_text(io.join(
      base, "a", "y.json"))), "b.npy": len(io.read_bytes(io.join(base, "b.npy"))), "log.jsonl": 4}
  io.remove(io.join(base, "log.jsonl"))
  io.remove(io.join(base, "log.jsonl"))  # absent: no error
  assert not io.exists(io.join(base, "log.jsonl"))
  assert io.absolute(base) == base
  assert not os.path.exists("gs:") and not (tmp_path / "gs:").exists()


def test_label_table_descriptor_and_tuple_caches_on_the_bucket(gcs):
  from gcl_jax.data.mining import TupleCache  # pylint: disable=g-import-not-at-top
  from gcl_jax.evaluation.cache import DescriptorCache  # pylint: disable=g-import-not-at-top
  from gcl_jax.labels import io as labels_io  # pylint: disable=g-import-not-at-top
  from gcl_jax.labels.synthetic_city import street_city  # pylint: disable=g-import-not-at-top

  query, database = street_city(6, 20, seed=0)
  table = labels_io.label_city_cached(query, database, f"{gcs}/labels", "c")
  again = labels_io.label_city_cached(query, database, f"{gcs}/labels", "c")  # read back
  np.testing.assert_array_equal(again.psi, table.psi)
  np.testing.assert_array_equal(again.db_idx, table.db_idx)
  assert sorted(io.listdir(f"{gcs}/labels")) == ["c_fov.manifest.json", "c_fov.npz"]

  cache = DescriptorCache(f"{gcs}/descriptors")
  key = "ab" * 32
  desc = np.arange(12, dtype=np.float32).reshape(3, 4)
  assert cache.load(key) is None
  cache.save(key, desc)
  np.testing.assert_array_equal(cache.load(key), desc)

  tuples = TupleCache(city=np.zeros(2, np.int32), query=np.array([0, 3], np.int32),
                      positive=np.array([1, 2], np.int32),
                      negatives=np.array([[4, 5], [6, 7]], np.int32),
                      negative_city=np.zeros((2, 2), np.int32), images_forwarded=9, num_queries=4)
  tuples.save(f"{gcs}/mining/0.npz")
  back = TupleCache.load(f"{gcs}/mining/0.npz")
  np.testing.assert_array_equal(back.negatives, tuples.negatives)
  assert back.images_forwarded == 9 and back.num_queries == 4


def _sandbox(tmp_path, monkeypatch):
  """Makes a fresh directory the cwd and TMPDIR: a relative or temporary write shows there."""
  sandbox = tmp_path / "sandbox"
  sandbox.mkdir()
  monkeypatch.chdir(sandbox)
  monkeypatch.setenv("TMPDIR", str(sandbox))
  monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile re-reads TMPDIR
  return sandbox


def test_synthetic_world_in_the_bucket_equals_the_local_one(gcs, tmp_path, monkeypatch):
  """generate_world to a URL: the same bytes as locally, world.json last, reused, rebuilt when
  unfinished or stale, foreign data refused; the pipeline reads it through gcl_jax.io."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from test_synthetic import TINY  # pylint: disable=g-import-not-at-top
  from gcl_jax import synthetic  # pylint: disable=g-import-not-at-top
  from gcl_jax.data import msls, pipeline  # pylint: disable=g-import-not-at-top
  from gcl_jax.synthetic import write as synthetic_write  # pylint: disable=g-import-not-at-top

  config = synthetic.WorldConfig(**{**TINY, "val_cities": [], "frame_spacing_m": 8.0})  # 74 images
  local = str(tmp_path / "local_world")
  synthetic.generate_world(local, config, progress=False)
  want = {name: len(data) for name, data in _local_digests(local).items()}
  sandbox = _sandbox(tmp_path, monkeypatch)
  root = f"{gcs}/worlds/tiny"

  writes = []
  real_write = io.atomic_write
  monkeypatch.setattr(io, "atomic_write", lambda p, d: writes.append(p) or real_write(p, d))
  assert synthetic.generate_world(root + "/", config, progress=False) == root
  assert _bucket_files(root) == want
  for name, digest in _local_digests(local).items():
    assert io.read_bytes(f"{root}/{name}") == digest, name
  uploads = [w for w in writes if io.is_url(w)]  # (the local rendering writes CSVs this way too)
  assert uploads[-1] == f"{root}/world.json" and sorted(uploads) == sorted(
      f"{root}/{name}" for name in want)
  assert os.listdir(sandbox) == []  # the local rendering directory is gone

  calls = []
  real_city = synthetic_write._generate_city  # pylint: disable=protected-access
  monkeypatch.setattr(synthetic_write, "_generate_city",
                      lambda *a, **k: calls.append(a[1]) or real_city(*a, **k))
  synthetic.generate_world(root, config, progress=False)  # complete: reused
  assert calls == []
  io.remove(f"{root}/world.json")  # an interrupted upload: rebuilt
  synthetic.generate_world(root, config, progress=False)
  assert calls == ["tiny_train"] and _bucket_files(root) == want

  # The pipeline's default reader: gcl_jax.io for URLs, tf.io.read_file for local paths.
  table = msls.read_msls_side(root, "tiny_train", "database")
  urls = [f"{root}/{p}" for p in table.paths[:5]]
  assert pipeline.default_reader(urls[0]) is io.read_bytes
  assert pipeline.default_reader(os.path.join(local, table.paths[0])) is None
  batch = dict(batch_size=4, image_size=(16, 24), mean=pipeline.IMAGENET_MEAN,
               std=pipeline.IMAGENET_STD)
  from_bucket = list(pipeline.image_batches(urls, **batch))
  from_disk = list(pipeline.image_batches([os.path.join(local, p) for p in table.paths[:5]],
                                          **batch))
  assert len(from_bucket) == len(from_disk) == 2
  for a, b in zip(from_bucket, from_disk):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert pipeline.check_file(urls[0]) is None
  assert pipeline.check_file(f"{root}/missing.jpg") is not None

  stale = dataclasses.replace(config, seed=1)  # another world: replaced, old images deleted
  synthetic.generate_world(root, stale, progress=False)
  assert io.read_json(f"{root}/world.json")["config"]["seed"] == 1
  new_images = {n for n in _bucket_files(root) if n.endswith(".jpg")}
  assert new_images and not new_images & {n for n in want if n.endswith(".jpg")}

  io.atomic_write(f"{gcs}/worlds/foreign/precious.txt", "keep me")
  with pytest.raises(FileExistsError, match="not a synthetic world"):
    synthetic.generate_world(f"{gcs}/worlds/foreign", config, progress=False)
  assert io.read_text(f"{gcs}/worlds/foreign/precious.txt") == "keep me"
  assert not [d for d, _, _ in os.walk(tmp_path) if os.path.basename(d) in ("gs:", "s3:")]


def _local_digests(top: str) -> dict[str, bytes]:
  """{path relative to top: bytes} of every file under `top`."""
  out = {}
  for dirpath, _, filenames in os.walk(top):
    for name in filenames:
      full = os.path.join(dirpath, name)
      with open(full, "rb") as fh:
        out[os.path.relpath(full, top).replace(os.sep, "/")] = fh.read()
  return out


@pytest.mark.slow
def test_demo_trains_and_evaluates_with_its_workdir_in_a_bucket(gcs, tmp_path, monkeypatch):
  from test_end_to_end import tiny_demo_config  # pylint: disable=g-import-not-at-top
  from gcl_jax.train import checkpoint, train  # pylint: disable=g-import-not-at-top

  config = tiny_demo_config(4)
  assert not config.data.root  # the demo path: the world is generated under <workdir>/data
  with config.unlocked():  # 219 images to upload instead of 516
    config.data.synthetic.frame_spacing_m = 9.0
    config.data.synthetic.train_query_sequences = 12
  config.labels.dir = f"{gcs}/labels_demo"
  workdir = f"{gcs}/run"
  sandbox = _sandbox(tmp_path, monkeypatch)

  results = train.train_and_evaluate(config, workdir)
  evaluated = train.evaluate_checkpoint(config, workdir)  # restores the checkpoint from the bucket

  # Only TensorFlow's own scratch is allowed: tf.data's autograph compiles the pipeline's Python
  # functions through generated modules in TMPDIR.
  # The world was rendered into a temporary directory in TMPDIR and uploaded; it is gone.
  assert {k: v for k, v in _local_files(sandbox).items()
          if not k.startswith("__autograph_generated_file")} == {}
  assert sorted(os.listdir(tmp_path)) == ["sandbox"]
  # A URL taken for a local path (os.path.abspath("gs://b/x") is "<cwd>/gs:/b/x") shows as a
  # directory named "gs:" under the cwd (the sandbox) or wherever a path was made absolute.
  assert not [d for d, _, _ in os.walk(tmp_path) if os.path.basename(d) in ("gs:", "s3:")]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  assert not any(os.path.exists(os.path.join(repo, d)) for d in ("gs:", "s3:"))

  files = _bucket_files(workdir)
  names = set(files)
  world = io.read_json(f"{workdir}/data/synthetic_msls/world.json")
  for city in ("synth_north", "synth_val"):
    for side in ("query", "database"):
      base = f"data/synthetic_msls/train_val/{city}/{side}"
      for csv in ("raw.csv", "postprocessed.csv", "seq_info.csv", "subtask_index.csv"):
        assert files.get(f"{base}/{csv}", 0) > 0, (base, csv)
      images = [n for n in names if n.startswith(f"{base}/images/") and n.endswith(".jpg")]
      assert len(images) == world["cities"][city][side] > 0, (base, len(images))
  for name in ("config.json", "metrics.jsonl", "results.json", "results.md", "retrievals.png",
               "recall_curves.png", "eval_step4_msls_per_city.json"):
    assert files.get(name, 0) > 0, (name, sorted(names))
  assert any(n.startswith("checkpoints/4/") for n in names), sorted(names)
  assert any(n.startswith("descriptors/") and n.endswith(".npy") for n in names), sorted(names)
  assert sorted(io.listdir(config.labels.dir)) == ["synth_north_fov.manifest.json",
                                                   "synth_north_fov.npz"]
  assert checkpoint.Checkpointer(workdir, 2).latest_step() == 4
  assert evaluated["step"] == 4
  assert evaluated["recall@1"] == results["trained"]["recall@1"]

  records = [json.loads(line) for line in io.read_text(f"{workdir}/metrics.jsonl").splitlines()]
  assert [r["step"] for r in records] == [2, 4]
  event_files = [n for n in names if n.startswith("tensorboard/events.out.tfevents.")]
  assert len(event_files) == 1, event_files
  events = _events(io.read_bytes(f"{workdir}/{event_files[0]}"))
  assert events[0].file_version == "brain.Event:2"
  assert [e.step for e in events[1:]] == [2, 4]
  for event, record in zip(events[1:], records):
    losses = [v.tensor.float_val[0] for v in event.summary.value if v.tag == "loss"]
    assert losses == [pytest.approx(record["loss"], rel=1e-6)]

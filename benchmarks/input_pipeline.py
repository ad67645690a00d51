"""Input pipeline throughput: our tf.data training stream vs the authors' loading path.

For each source size in `--sources` (default 1024x768, the G4 golden's size, where both sides
resample, and 640x480, MSLS's own frame size, where the resize to 480x640 is a copy), generates
`--size` photo-like JPEGs in a temporary folder, then measures, interleaved in the same run (each
round: theirs, then every variant of ours):

* theirs, when a Python with torch + torchvision is given (`--torch_python`, default
  $GCL_TORCH_PYTHON): the authors' path itself (GCL_REFERENCE 3.2) in a subprocess of this
  script (`--torch_worker`): a torch Dataset doing `PIL.Image.open(path).convert('RGB')`,
  torchvision `Resize((480, 640))`, `ToTensor()`, `Normalize(ImageNet)`, in a
  `DataLoader(num_workers=4, batch_size=32, persistent_workers=True)` (one warm-up epoch starts
  the workers), with OMP_WAIT_POLICY=PASSIVE as in benchmarks/train_step.py. Without torch: a
  stand-in (the same PIL calls + NumPy normalization in a 4-process multiprocessing Pool);
  `theirs` in the summary says which one ran.
* ours: `gcl_jax.data.pipeline.pair_batches` over pairs (i, i+1), counting both images, batches
  of `--batch_size` // 2 pairs (= `--batch_size` images), 480x640:
  - `pil_uint8` (headline): what the trainer streams by default (config.data.normalize_on_device):
    PIL-exact uint8 batches, normalized on the accelerator bit-identically to the authors'
    floats (gcl_jax/data/normalize.py; that device work is not part of this host measurement);
  - `pil`: float32 batches normalized on the host (normalize_on_device=False), the same floats;
  - `tf`: the pure-TF resize (<= 1 grey level off; see the pipeline docstring);
  - `tfds`: `pil_uint8` reading the bytes from a materialised `TfdsSource` store (built here with
    the gcl_msls builder on a one-city MSLS tree of the same JPEGs) instead of files.
* profile: single-threaded cost per image of each stage of ours (read, PIL decode, resize, to
  NumPy, normalize per batch in NumPy as the host-normalized stream does, and in a TF graph for
  comparison), to show where the time goes.
* fast_decode: on `--fast_decode_images` 2048x1536 JPEGs (>= 2x the target: where
  `fast_decode=True` applies), the speed-up and the error against the exact path.

Per-core figures divide by the CPU cores this process may use (os.sched_getaffinity), for both
sides (theirs runs 4 worker processes + the main one on the same cores). On a machine shared with
other jobs wall-clock throughput mostly measures the share each side gets, so every run also
reports CPU efficiency: images per CPU-second actually consumed (user + system time of all threads,
from /proc; theirs: the DataLoader's main process and its workers), median over rounds, and
`cpu_ratio_<variant>` = ours / theirs of it. `ratio_<variant>` is the median over rounds of each
round's ours / that round's theirs images/s (a load change between rounds cannot favour one side);
`*_images_per_s_per_core` are the best rounds. Prints one JSON object per line (a
`source_summary` line per source); the LAST line is the summary: `ratio_<source>` and
`cpu_ratio_<source>` of the headline variant, and every figure per source under `sources`.

    python benchmarks/input_pipeline.py --size 160 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = (480, 640)
import torch_process  # pylint: disable=g-import-not-at-top  (benchmarks/torch_process.py)

emit, find_torch = torch_process.emit, torch_process.find_torch
DEFAULT_TORCH_PYTHON = torch_process.DEFAULT_TORCH_PYTHON


def cpu_seconds(pids: list[int]) -> float:
  """User + system CPU seconds so far of the processes `pids` (all their threads), from /proc."""
  total = 0
  for pid in pids:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
  return total / os.sysconf("SC_CLK_TCK")


def make_jpegs(directory: str, n: int, width: int = 1024, height: int = 768,
               prefix: str = "im") -> list[str]:
  """Photo-like JPEGs (gradients + noise), quality 90."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:height, 0:width]
  base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1).astype(np.int16)
  paths = []
  os.makedirs(directory, exist_ok=True)
  for i in range(n):
    img = np.clip(base + rng.integers(-30, 30, (height, width, 3)) + i % 50, 0, 255)
    path = os.path.join(directory, f"{prefix}{i:05d}.jpg")
    Image.fromarray(img.astype(np.uint8)).save(path, quality=90)
    paths.append(path)
  return paths


# ------------------------------------------------------------------------------------------ theirs


def torch_worker(workers: int, batch_size: int) -> None:
  """Runs under the torch interpreter: reads the file list from stdin, answers 'run' lines."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision.transforms as T  # pylint: disable=g-import-not-at-top

  paths = json.loads(sys.stdin.readline())
  transform = T.Compose([T.Resize(SIZE), T.ToTensor(),
                         T.Normalize(mean=MEAN.tolist(), std=STD.tolist())])

  class Images(torch.utils.data.Dataset):
    """The authors' image dataset: read_image + transform."""

    def __len__(self):
      return len(paths)

    def __getitem__(self, i):
      return transform(Image.open(paths[i]).convert("RGB"))

  loader = torch.utils.data.DataLoader(Images(), batch_size=batch_size, num_workers=workers,
                                       shuffle=False, persistent_workers=workers > 0)

  def pids() -> list[int]:
    it = loader._iterator  # pylint: disable=protected-access  # persistent workers live here
    workers = it._workers if it is not None else []  # pylint: disable=protected-access
    return [os.getpid()] + [w.pid for w in workers]

  def epoch() -> tuple[float, int, float]:
    c0, t0, n = cpu_seconds(pids()), time.perf_counter(), 0
    for batch in loader:
      n += len(batch)
    return time.perf_counter() - t0, n, cpu_seconds(pids()) - c0

  first, _, _ = epoch()  # starts the workers
  print(json.dumps({"ready": True, "warmup_epoch_s": first, "torch": torch.__version__,
                    "threads": torch.get_num_threads()}), flush=True)
  for line in sys.stdin:
    if line.strip() != "run":
      break
    seconds, n, cpu = epoch()
    print(json.dumps({"seconds": seconds, "images": n, "cpu_s": cpu}), flush=True)


class TorchTheirs(torch_process.TorchProcess):
  """The authors' DataLoader in a subprocess, driven line by line (rounds interleave)."""

  def __init__(self, python: str, paths: list[str], workers: int, batch_size: int):
    super().__init__(python, __file__, ["--torch_worker", f"--workers={workers}",
                                        f"--batch_size={batch_size}"],
                     first_line=json.dumps(paths))

  def run(self) -> tuple[float, int, float]:
    """(seconds, images, CPU seconds of the main process and its workers) of one epoch."""
    out = self.request("run")
    return out["seconds"], out["images"], out["cpu_s"]


def authors_load(path: str) -> np.ndarray:
  """Stand-in: PIL open + Resize bilinear + ToTensor + Normalize -> (3, H, W) float32."""
  with open(path, "rb") as f:
    image = Image.open(f).convert("RGB")
  image = image.resize((SIZE[1], SIZE[0]), Image.BILINEAR)
  x = np.asarray(image, np.float32) / 255.0
  return np.ascontiguousarray(((x - MEAN) / STD).transpose(2, 0, 1))


class PoolTheirs:
  """Stand-in for the DataLoader when torch is absent: a `workers`-process Pool."""

  def __init__(self, paths: list[str], workers: int, batch_size: int):
    self.paths, self.batch_size, self.workers = paths, batch_size, workers
    self.pool = multiprocessing.get_context("fork").Pool(workers)
    self.pool.map(authors_load, paths[:workers])  # start-up outside the timing
    self.info = {}

  def run(self) -> tuple[float, int, float]:
    pids = [os.getpid()] + [p.pid for p in self.pool._pool]  # pylint: disable=protected-access
    c0, t0, batch, n = cpu_seconds(pids), time.perf_counter(), [], 0
    for x in self.pool.imap(authors_load, self.paths,
                            chunksize=max(1, self.batch_size // self.workers)):
      batch.append(x)
      n += 1
      if len(batch) == self.batch_size:
        np.stack(batch)  # collate, as the DataLoader does
        batch = []
    return time.perf_counter() - t0, n, cpu_seconds(pids) - c0

  def close(self) -> None:
    self.pool.close()
    self.pool.join()


# -------------------------------------------------------------------------------------------- ours


def run_ours(paths: list[str], pairs_per_batch: int, variant: str, reader=None
             ) -> tuple[float, int, float]:
  """Seconds, images and CPU seconds (this process) of one pass of the pair stream."""
  from gcl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  p0 = np.array(paths)
  p1 = np.roll(p0, -1)
  label = np.zeros(len(paths), np.float32)
  kw = dict(batch_size=pairs_per_batch, image_size=SIZE, mean=tuple(MEAN), std=tuple(STD),
            resize_method="tf" if variant == "tf" else "pil", reader=reader,
            normalize=variant in ("pil", "tf"))
  c0, t0, n = cpu_seconds([os.getpid()]), time.perf_counter(), 0
  for batch in pipeline.pair_batches(p0, p1, label, **kw):
    n += 2 * len(batch["label"])
  return time.perf_counter() - t0, n, cpu_seconds([os.getpid()]) - c0


def build_tfds(tmp: str, paths: list[str]):
  """A one-city gcl_msls dataset of the benchmark JPEGs; returns (TfdsSource, tfds paths, info)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from gcl_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  from gcl_jax.data.tfds_builders import GclMsls  # pylint: disable=g-import-not-at-top
  manual = os.path.join(tmp, "msls")
  half = len(paths) // 2
  for side, chunk in (("query", paths[:half]), ("database", paths[half:])):
    base = os.path.join(manual, "train_val", "bench", side)
    os.makedirs(os.path.join(base, "images"))
    keys = [os.path.basename(p)[:-4] for p in chunk]
    for p, k in zip(chunk, keys):
      os.link(p, os.path.join(base, "images", f"{k}.jpg"))
    rows = "".join(f"{i},{k},0,0,{i % 360},0,False\n" for i, k in enumerate(keys))
    with open(os.path.join(base, "raw.csv"), "w") as f:
      f.write(",key,lon,lat,ca,captured_at,pano\n" + rows)
    rows = "".join(f"{i},{k},{500000 + i},{6000000 + i},0,0,False,0\n" for i, k in enumerate(keys))
    with open(os.path.join(base, "postprocessed.csv"), "w") as f:
      f.write(",key,easting,northing,unique_cluster,control_panel,night,view_direction\n" + rows)
  data_dir = os.path.join(tmp, "tfds")
  t0 = time.perf_counter()
  GclMsls(data_dir=data_dir, file_format="tfrecord").download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual))
  build_s = time.perf_counter() - t0
  import resource  # pylint: disable=g-import-not-at-top
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  source = tfds_source.TfdsSource("gcl_msls", data_dir)  # in memory
  t0 = time.perf_counter()
  query, database = source.city("bench")
  load_s = time.perf_counter() - t0
  cached = tfds_source.TfdsSource("gcl_msls", data_dir, cache_dir=os.path.join(tmp, "cache"))
  t0 = time.perf_counter()
  cached.city("bench")
  cache_write_s = time.perf_counter() - t0
  reopened = tfds_source.TfdsSource("gcl_msls", data_dir, cache_dir=os.path.join(tmp, "cache"))
  t0 = time.perf_counter()
  reopened.city("bench")
  cache_reopen_s = time.perf_counter() - t0
  info = {"name": "tfds_materialise", "images": len(paths), "build_s": round(build_s, 2),
          "encoded_mb": round(source.nbytes / 2**20, 2),
          "in_memory_load_s": round(load_s, 3),
          "in_memory_images_per_s": round(len(paths) / load_s, 1),
          "disk_cache_write_s": round(cache_write_s, 3),
          "disk_cache_reopen_s": round(cache_reopen_s, 3),
          "max_rss_growth_mb_upper_bound": round(
              (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)}
  tpaths = np.concatenate([query.full_paths(), database.full_paths()]).tolist()
  return source, tpaths, info


# ----------------------------------------------------------------------------------------- profile


def profile(paths: list[str], batch_images: int) -> dict:
  """Single-threaded ms per image of each stage of ours (median of the images)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from gcl_jax.data import normalize, pipeline  # pylint: disable=g-import-not-at-top
  t = {k: [] for k in ("read", "decode", "resize", "to_numpy")}
  for p in paths:
    t0 = time.perf_counter()
    data = tf.io.read_file(p).numpy()
    t1 = time.perf_counter()
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      t2 = time.perf_counter()
      out = image.resize((SIZE[1], SIZE[0]), Image.BILINEAR)
      t3 = time.perf_counter()
      arr = np.asarray(out, np.uint8)
      t4 = time.perf_counter()
    for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
      v and t[k].append(v)
  ms = {f"{k}_ms": round(float(np.median(v)) * 1e3, 3) for k, v in t.items()}
  batch = np.repeat(arr[None], batch_images, 0)
  tf_norm = tf.function(lambda b: pipeline.normalize(b, MEAN, STD))
  for name, fn in (("normalize_numpy", lambda: normalize.normalize_array(batch, MEAN, STD)),
                   ("normalize_tf_graph", lambda: tf_norm(batch).numpy())):
    fn()
    t0 = time.perf_counter()
    for _ in range(3):
      fn()
    ms[f"{name}_per_batch_ms_per_image"] = round(
        (time.perf_counter() - t0) / 3 / batch_images * 1e3, 3)
  ms["sum_ms"] = round(sum(v for k, v in ms.items() if not k.startswith("normalize_tf")), 3)
  return {"name": "profile_ours_single_thread", "images": len(paths), **ms,
          "note": "sum_ms: read + decode + resize + to_numpy + normalize_numpy (what pil runs); "
                  "pil_uint8 and tfds skip the normalization"}


def fast_decode_check(tmp: str, n: int) -> dict:
  """Speed and error of fast_decode=True where it applies (2048x1536 -> 480x640)."""
  from gcl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  paths = make_jpegs(os.path.join(tmp, "big"), n, 2048, 1536, prefix="big")
  datas = [open(p, "rb").read() for p in paths]
  res = {}
  for fast in (False, True):
    pipeline._pil_decode_resize(datas[0], *SIZE, fast)  # pylint: disable=protected-access
    t0 = time.perf_counter()
    res[fast] = [pipeline._pil_decode_resize(d, *SIZE, fast)  # pylint: disable=protected-access
                 for d in datas]
    res[f"{fast}_s"] = (time.perf_counter() - t0) / n
  diff = np.abs(np.stack(res[True]).astype(np.int16) - np.stack(res[False]))
  return {"name": "fast_decode", "images": n, "source_size": [1536, 2048],
          "exact_ms_per_image": round(res["False_s"] * 1e3, 2),
          "fast_ms_per_image": round(res["True_s"] * 1e3, 2),
          "speedup": round(res["False_s"] / res["True_s"], 2),
          "max_abs_levels": int(diff.max()), "mean_abs_levels": round(float(diff.mean()), 3),
          "frac_pixels_differing": round(float((diff > 0).mean()), 4),
          "max_abs_normalized": round(float(diff.max() / 255 / STD.min()), 4)}


# -------------------------------------------------------------------------------------------- main


def measure(tmp: str, paths: list[str], args, variants: list[str], cores: int) -> dict:
  """Interleaved rounds of theirs and every variant of ours on `paths`; returns the summary."""
  pairs = args.batch_size // 2
  for p in paths:  # warm the page cache for both
    with open(p, "rb") as f:
      f.read()
  source, tpaths = None, None
  if "tfds" in variants:
    source, tpaths, info = build_tfds(tmp, paths)
    emit(**info)
  emit(**profile(paths[:20], args.batch_size))
  python = find_torch(args.torch_python)
  if python:
    theirs = TorchTheirs(python, paths, args.workers, args.batch_size)
    theirs_name = (f"torch DataLoader ({args.workers} workers, batch {args.batch_size}) + "
                   "torchvision Resize/ToTensor/Normalize, OMP_WAIT_POLICY=PASSIVE")
  else:
    theirs = PoolTheirs(paths, args.workers, args.batch_size)
    theirs_name = ("stand-in: PIL+NumPy in a multiprocessing Pool (torch not found at "
                   f"{args.torch_python!r})")
  emit(name="theirs_setup", theirs=theirs_name, **theirs.info)
  for v in variants:  # TF start-up and tracing outside the timing
    run_ours((tpaths if v == "tfds" else paths)[: 2 * pairs], pairs, v,
             source.read if v == "tfds" else None)
  best, per_cpu, rounds = {"theirs": 0.0}, {"theirs": []}, {}
  try:
    for rnd in range(args.repeats):
      for v in ["theirs"] + variants:
        if v == "theirs":
          seconds, n, cpu = theirs.run()
        else:
          seconds, n, cpu = run_ours(tpaths if v == "tfds" else paths, pairs, v,
                                     source.read if v == "tfds" else None)
        ips = n / seconds
        best[v] = max(best.get(v, 0.0), ips)
        rounds.setdefault(v, []).append(ips)
        per_cpu.setdefault(v, []).append(n / cpu)
        emit(name=v if v == "theirs" else f"ours_{v}", round=rnd, images=n,
             seconds=round(seconds, 3), images_per_s=round(ips, 2),
             images_per_s_per_core=round(ips / cores, 2), cpu_s=round(cpu, 3),
             images_per_cpu_s=round(n / cpu, 2))
  finally:
    theirs.close()
  eff = {k: float(np.median(v)) for k, v in per_cpu.items()}
  # Paired ratios: each round's ours / the same round's theirs (same machine load), median.
  paired = {v: float(np.median(np.array(rounds[v]) / np.array(rounds["theirs"])))
            for v in variants}
  return {"theirs": theirs_name,
          "theirs_images_per_s_per_core": round(best["theirs"] / cores, 2),
          **{f"{v}_images_per_s_per_core": round(best[v] / cores, 2) for v in variants},
          "theirs_images_per_cpu_s": round(eff["theirs"], 2),
          **{f"{v}_images_per_cpu_s": round(eff[v], 2) for v in variants},
          **{f"ratio_{v}": round(paired[v], 3) for v in variants},
          **{f"cpu_ratio_{v}": round(eff[v] / eff["theirs"], 3) for v in variants}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", type=int, default=160, help="number of JPEGs (images) per source")
  parser.add_argument("--sources", default="1024x768,640x480",
                      help="comma-separated WxH sizes of the source JPEGs; each is measured")
  parser.add_argument("--batch_size", type=int, default=32,
                      help="images per batch (theirs: DataLoader batch; ours: half as many pairs)")
  parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; best kept")
  parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (theirs)")
  parser.add_argument("--variants", default="pil_uint8,pil,tfds",
                      help="comma-separated variants of ours (pil_uint8, pil, tfds, tf); "
                      "pil_uint8 (the trainer's default) is the headline")
  parser.add_argument("--torch_python", default=DEFAULT_TORCH_PYTHON,
                      help="Python with torch + torchvision for the authors' path; '' = stand-in")
  parser.add_argument("--fast_decode_images", type=int, default=6,
                      help="2048x1536 JPEGs for the fast_decode check (0: skip)")
  parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_worker:
    torch_worker(args.workers, args.batch_size)
    return
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  variants = args.variants.split(",")
  if "pil_uint8" not in variants:
    variants.insert(0, "pil_uint8")
  sources = [tuple(int(v) for v in s.split("x")) for s in args.sources.split(",")]
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    if args.fast_decode_images:
      emit(**fast_decode_check(tmp, args.fast_decode_images))
    for width, height in sources:
      tag = f"{width}x{height}"
      t0 = time.perf_counter()
      paths = make_jpegs(os.path.join(tmp, tag, "jpg"), args.size, width, height)
      emit(name="setup", source=tag, images=len(paths),
           seconds=round(time.perf_counter() - t0, 2), cores=cores)
      results[tag] = measure(os.path.join(tmp, tag), paths, args, variants, cores)
      emit(name="source_summary", source=tag, **results[tag])
  head = "pil_uint8"
  emit(summary=True, images=args.size, cores=cores, image_size=list(SIZE),
       batch_images=args.batch_size, headline=head,
       **{f"ratio_{t}": r[f"ratio_{head}"] for t, r in results.items()},
       **{f"cpu_ratio_{t}": r[f"cpu_ratio_{head}"] for t, r in results.items()},
       sources=results)


if __name__ == "__main__":
  main()

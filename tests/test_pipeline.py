"""tf.data pipeline: PIL parity (G4), order, sharding, augmentation, and bad input handling."""

import json

import numpy as np
import pytest
from PIL import Image

from gcl_jax.data import normalize, pipeline

MEAN, STD = pipeline.IMAGENET_MEAN, pipeline.IMAGENET_STD
# One grey level of PIL's uint8 output, in normalized units (smallest std).
ONE_LEVEL = 1.0 / 255.0 / min(STD)


def _golden_image():
  y, x = np.mgrid[0:768, 0:1024]
  return np.stack([x * 255 // 1023, y * 255 // 767, (x + y) % 256], -1).astype(np.uint8)


def _authors(image: np.ndarray, size=(480, 640)) -> np.ndarray:
  """PIL Resize (bilinear) + ToTensor + Normalize, HWC."""
  out = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR), np.float32) / 255.0
  return (out - np.array(MEAN, np.float32)) / np.array(STD, np.float32)


def _load(path, size=(480, 640), **kw):
  return pipeline.load_image(str(path), size, MEAN, STD, **kw).numpy()


@pytest.fixture(scope="module")
def golden_png(tmp_path_factory):
  path = tmp_path_factory.mktemp("g4") / "golden.png"
  Image.fromarray(_golden_image()).save(path)
  return path


@pytest.mark.parametrize("method", ["tf", "pil"])
def test_g4_golden_transform(data_dir, golden_png, method):
  tol = 1e-5  # both back-ends reproduce PIL bit-exactly here (float32 normalization only)
  g = json.loads((data_dir / "golden_transform.json").read_text())
  out = _load(golden_png, resize_method=method)
  assert out.shape == (480, 640, 3)
  flat = out.reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(flat.mean(0), g["channel_means"], atol=1e-5)
  np.testing.assert_allclose(flat.std(0), g["channel_stds"], atol=1e-5)
  for cyx, value in g["pixels_c_y_x"].items():
    c, y, x = map(int, cyx.split(","))
    assert out[y, x, c] == pytest.approx(value, abs=tol), cyx
  assert np.abs(out - _authors(_golden_image())).max() <= tol


@pytest.mark.parametrize("size, max_frac", [((1024, 768), 0.03), ((160, 120), 0.03),
                                            ((333, 517), 0.3)])  # portrait: see pipeline docstring
def test_pil_parity_on_jpeg(tmp_path, size, max_frac):
  rng = np.random.default_rng(0)
  h, w = size[1], size[0]
  # Photo-like: smooth gradients plus noise, so that JPEG decoding matters.
  yy, xx = np.mgrid[0:h, 0:w]
  img = np.stack([xx * 200 // w, yy * 180 // h, (xx + yy) % 256], -1)
  img = img + rng.integers(0, 40, (h, w, 3))
  path = tmp_path / "photo.jpg"
  Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=85)
  ref = _authors(np.asarray(Image.open(path).convert("RGB")))
  diff = np.abs(_load(path) - ref)
  assert diff.max() <= ONE_LEVEL + 1e-5
  assert (diff > 1e-5).mean() < max_frac
  assert np.abs(_load(path, resize_method="pil") - ref).max() <= 1e-5


def _write_images(directory, n, size=(16, 12)):
  """Image i is uniformly grey with value 10 * i, so its content identifies it."""
  paths = []
  for i in range(n):
    p = directory / f"im{i}.png"
    Image.fromarray(np.full((size[1], size[0], 3), 10 * i, np.uint8)).save(p)
    paths.append(str(p))
  return paths


def _ids(batch_images):
  """Recover the image index from normalized grey images."""
  grey = batch_images[..., 0].mean((1, 2)) * STD[0] + MEAN[0]
  return np.rint(grey * 255 / 10).astype(int)


def _pairs(paths, n):
  p0 = np.array([paths[i] for i in range(n)], dtype=object)
  p1 = np.array([paths[(i + 1) % len(paths)] for i in range(n)], dtype=object)
  return p0, p1, np.arange(n, dtype=np.float32) / 10


def test_pair_batches_order_and_drop_remainder(tmp_path):
  paths = _write_images(tmp_path, 10)
  p0, p1, y = _pairs(paths, 10)
  batches = list(pipeline.pair_batches(p0, p1, y, batch_size=4, image_size=(6, 8), mean=MEAN,
                                       std=STD))
  assert len(batches) == 2
  assert set(batches[0]) == {"im0", "im1", "label"}
  assert batches[0]["im0"].shape == (4, 6, 8, 3) and batches[0]["label"].dtype == np.float32
  ids0 = np.concatenate([_ids(b["im0"]) for b in batches])
  ids1 = np.concatenate([_ids(b["im1"]) for b in batches])
  np.testing.assert_array_equal(ids0, np.arange(8))
  np.testing.assert_array_equal(ids1, np.arange(1, 9))
  np.testing.assert_allclose(np.concatenate([b["label"] for b in batches]), y[:8])


def _corrupt(paths, tmp_path):
  """Returns {kind: path}: a missing file, a truncated JPEG and a non-image."""
  good = tmp_path / "good.jpg"
  Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(good, quality=90)
  data = good.read_bytes()
  trunc = tmp_path / "truncated.jpg"
  trunc.write_bytes(data[: len(data) // 2])
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
  return {"missing": str(tmp_path / "missing.jpg"), "truncated": str(trunc),
          "corrupt": str(corrupt)}


@pytest.mark.parametrize("kind", ["missing", "truncated", "corrupt"])
@pytest.mark.parametrize("position", [0, 5, 9])
def test_bad_file_raises_naming_it(tmp_path, kind, position):
  paths = _write_images(tmp_path, 10)
  bad = _corrupt(paths, tmp_path)[kind]
  p0, p1, y = _pairs(paths, 10)
  p1[position] = bad
  with pytest.raises(pipeline.PipelineError, match=f"element {position} .*{bad}"):
    for _ in pipeline.pair_batches(p0, p1, y, batch_size=2, image_size=(6, 8), mean=MEAN, std=STD):
      pass


@pytest.mark.parametrize("kind", ["missing", "truncated", "corrupt"])
def test_bad_file_raises_with_tf_resize(tmp_path, kind):
  paths = _write_images(tmp_path, 4)
  bad = _corrupt(paths, tmp_path)[kind]
  p0, p1, y = _pairs(paths, 4)
  p0[2] = bad
  with pytest.raises(pipeline.PipelineError, match=f"element 2 .*{bad}"):
    list(pipeline.pair_batches(p0, p1, y, batch_size=2, image_size=(6, 8), mean=MEAN, std=STD,
                               resize_method="tf"))


def test_skip_drops_whole_pair_and_reports(tmp_path):
  paths = _write_images(tmp_path, 12)
  bad = _corrupt(paths, tmp_path)
  p0, p1, y = _pairs(paths, 12)
  p0[1], p1[4], p0[11] = bad["missing"], bad["truncated"], bad["corrupt"]
  report = pipeline.SkipReport()
  batches = list(pipeline.pair_batches(p0, p1, y, batch_size=3, image_size=(6, 8), mean=MEAN,
                                       std=STD, errors="skip", skip_report=report))
  kept = [i for i in range(12) if i not in (1, 4, 11)]  # 9 pairs -> 3 full batches
  assert len(batches) == 3
  ids0 = np.concatenate([_ids(b["im0"]) for b in batches])
  ids1 = np.concatenate([_ids(b["im1"]) for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(ids0, kept)
  np.testing.assert_array_equal(ids1, [(i + 1) % 12 for i in kept])
  np.testing.assert_allclose(labels, y[kept])  # each label stays with its own images
  assert report.skipped == 3
  assert [bad["missing"] in report.files[0], bad["truncated"] in report.files[1],
          bad["corrupt"] in report.files[2]] == [True] * 3
  assert "No such file or directory" in report.files[0] and "{{" not in report.files[0]
  assert "Truncated" in report.files[1] or "truncated" in report.files[1].split(": ", 1)[1]


def test_image_batches_pad_mask_and_errors(tmp_path):
  paths = _write_images(tmp_path, 5)
  batches = list(pipeline.image_batches(paths, batch_size=2, image_size=(6, 8), mean=MEAN, std=STD))
  assert len(batches) == 3
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]), [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(np.concatenate([_ids(b["image"]) for b in batches])[:5], range(5))
  paths[4] = str(tmp_path / "gone.png")
  with pytest.raises(pipeline.PipelineError, match="gone.png"):
    list(pipeline.image_batches(paths, batch_size=2, image_size=(6, 8), mean=MEAN, std=STD))


def test_host_indices_partition():
  parts = [pipeline.host_indices(23, 8, h, 4) for h in range(4)]
  assert all(len(p) == 4 for p in parts)  # 2 full global batches x 2 per host
  np.testing.assert_array_equal(parts[1], [2, 3, 10, 11])
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(16))
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.host_indices(10, 6, 0, 4)


def test_augmentation_off_by_default_and_deterministic(tmp_path):
  paths = []
  rng = np.random.default_rng(0)
  for i in range(4):
    p = tmp_path / f"r{i}.png"
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(p)
    paths.append(str(p))
  p0, p1, y = np.array(paths), np.array(paths[::-1]), np.zeros(4)
  kw = dict(batch_size=4, image_size=(6, 8), mean=MEAN, std=STD)
  plain = next(pipeline.pair_batches(p0, p1, y, **kw))
  ref = np.stack([_load(p, (6, 8)) for p in paths])
  np.testing.assert_allclose(plain["im0"], ref, atol=1e-6)
  a1 = next(pipeline.pair_batches(p0, p1, y, augment=True, seed=3, **kw))
  a2 = next(pipeline.pair_batches(p0, p1, y, augment=True, seed=3, **kw))
  a3 = next(pipeline.pair_batches(p0, p1, y, augment=True, seed=4, **kw))
  np.testing.assert_array_equal(a1["im0"], a2["im0"])
  assert np.abs(a1["im0"] - plain["im0"]).max() > 1e-3
  assert np.abs(a1["im0"] - a3["im0"]).max() > 1e-3


def _photo(path, w, h, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  img = np.stack([xx * 200 // w, yy * 180 // h, (xx + yy) % 256], -1)
  img = img + rng.integers(0, 40, (h, w, 3))
  Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=85)
  return str(path)


def test_uint8_stream_and_exact_normalization(tmp_path):
  paths = [_photo(tmp_path / f"p{i}.jpg", 40 + 3 * i, 30 + 2 * i, i) for i in range(4)]
  p0, p1, y = np.array(paths), np.array(paths[::-1]), np.zeros(4)
  kw = dict(batch_size=2, image_size=(12, 16), mean=MEAN, std=STD)
  raw = list(pipeline.pair_batches(p0, p1, y, normalize=False, **kw))
  norm = list(pipeline.pair_batches(p0, p1, y, **kw))
  # uint8 images are PIL's own resize output.
  want = [np.asarray(Image.open(p).convert("RGB").resize((16, 12), Image.BILINEAR)) for p in paths]
  assert raw[0]["im0"].dtype == np.uint8
  np.testing.assert_array_equal(np.concatenate([b["im0"] for b in raw]), np.stack(want))
  # The float batches are torch's arithmetic (true divisions), bit for bit.
  for r, n in zip(raw, norm):
    for k in ("im0", "im1"):
      x = r[k].astype(np.float32)
      torch_like = (x / np.float32(255) - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
      np.testing.assert_array_equal(n[k], torch_like)
      np.testing.assert_array_equal(normalize.normalize_array(r[k], MEAN, STD), torch_like)
  images = np.concatenate([b["image"] for b in pipeline.image_batches(
      paths, batch_size=3, image_size=(12, 16), mean=MEAN, std=STD, normalize=False)])
  np.testing.assert_array_equal(images[:4], np.stack(want))


def test_fast_decode_opt_in(tmp_path):
  big = _photo(tmp_path / "big.jpg", 128, 96)  # >= 2x the 48x64 target: DCT scaling applies
  small = _photo(tmp_path / "small.jpg", 100, 75)  # < 2x: fast_decode changes nothing
  size = (48, 64)
  for path, exact in ((big, False), (small, True)):
    ref = pipeline.read_resized(path, size).numpy()
    fast = pipeline.read_resized(path, size, fast_decode=True).numpy()
    diff = np.abs(fast.astype(int) - ref)
    if exact:
      np.testing.assert_array_equal(fast, ref)
    else:
      assert 0 < diff.max() <= 24 and diff.mean() < 3
  with pytest.raises(ValueError, match="fast_decode needs resize method 'pil'"):
    pipeline.read_resized(big, size, "tf", fast_decode=True)

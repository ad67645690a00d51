"""Tests of the retrieval pictures, recall curves, markdown table and thumbnail baseline."""

import numpy as np
import pytest
from PIL import Image

from gcl_jax.evaluation import (plot_recall_curves, plot_retrievals, results_markdown,
                                thumbnail_descriptors)


def _write(path, size_hw, color, fmt="PNG"):
  Image.new("RGB", (size_hw[1], size_hw[0]), color).save(path, format=fmt)
  return str(path)


def _is_green(px):
  return (px[..., 1] > 140) & (px[..., 0] < 90) & (px[..., 2] < 90)


def _is_red(px):
  return (px[..., 0] > 160) & (px[..., 1] < 90) & (px[..., 2] < 90)


@pytest.mark.parametrize("size_hw", [(64, 96), (480, 640)])
def test_retrieval_grid_size_and_border_colours(tmp_path, size_hw):
  q = _write(tmp_path / "q.png", size_hw, (128, 128, 128))
  dbs = [_write(tmp_path / f"d{i}.png", size_hw, (120 + i, 120, 130)) for i in range(3)]
  out = tmp_path / "sub" / "grid.png"
  rows = plot_retrievals([q], dbs, np.array([[0, 2, 1]]), [np.array([0])], str(out), k=2)
  assert rows.tolist() == [0]
  px = np.asarray(Image.open(out).convert("RGB")).astype(int)
  image_px = round(200 * size_hw[0] / size_hw[1])
  assert px.shape == (image_px + 30, 3 * 200, 3)
  query_col, correct_col, wrong_col = px[:, :200], px[:, 200:400], px[:, 400:]
  assert not _is_green(query_col).any() and not _is_red(query_col).any()
  assert _is_green(correct_col).sum() > 500 and not _is_red(correct_col).any()
  assert _is_red(wrong_col).sum() > 500 and not _is_green(wrong_col).any()
  # The green border frames the image: its left edge lies in the panel's left margin area.
  green_cols = np.flatnonzero(_is_green(correct_col[30 + image_px // 2]))
  assert green_cols.min() < 15 and green_cols.max() > 185


def test_retrieval_grid_picks_queries_with_seed_and_draws_empty_slots(tmp_path):
  q = [_write(tmp_path / f"q{i}.png", (30, 40), (100, 100, 100)) for i in range(6)]
  db = [_write(tmp_path / "d0.png", (30, 40), (90, 90, 90))]
  ranked = np.array([[0, -1]] * 6)
  positives = [np.array([0])] * 6
  rows_a = plot_retrievals(q, db, ranked, positives, str(tmp_path / "a.png"), num_queries=3, seed=4)
  rows_b = plot_retrievals(q, db, ranked, positives, str(tmp_path / "b.png"), num_queries=3, seed=4)
  assert rows_a.tolist() == rows_b.tolist() and len(set(rows_a.tolist())) == 3
  assert rows_a.tolist() == sorted(rows_a.tolist())
  px = np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))
  assert px.shape == (3 * (150 + 30), 3 * 200, 3)  # k=5 clipped to the 2 ranked columns.
  assert not _is_red(px).any()  # The -1 slot is neither right nor wrong.


def test_retrieval_grid_input_errors(tmp_path):
  q = _write(tmp_path / "q.png", (8, 8), (0, 0, 0))
  with pytest.raises(ValueError, match="ranked has 1 rows but query_paths has 2"):
    plot_retrievals([q, q], [q], np.array([[0]]), [np.array([0])], str(tmp_path / "x.png"))
  with pytest.raises(ValueError, match="database index 3 but db_paths has only 1"):
    plot_retrievals([q], [q], np.array([[3]]), [np.array([0])], str(tmp_path / "x.png"))


def test_recall_curves_png(tmp_path):
  results = {"untrained": {"recall@1": 10.0, "recall@5": 20.0, "recall@10": 30.0, "recall@20": 35.0,
                           "protocol": "msls_per_city", "num_queries": 3},
             "trained": {"recall@1": 50.0, "recall@5": 70.0, "recall@10": 80.0, "recall@20": 90.0,
                         "protocol": "msls_per_city", "num_queries": 3}}
  out = tmp_path / "curves.png"
  plot_recall_curves(results, str(out))
  with Image.open(out) as im:
    assert im.size == (round(6.4 * 120), round(4.2 * 120))
  with pytest.raises(ValueError, match="result 'x' has no 'recall@N' entry"):
    plot_recall_curves({"x": {"map@1": 0.1}}, str(out))


def test_results_markdown():
  results = {"untrained": {"recall@1": 12.345, "recall@5": 50.0, "num_queries": 740,
                           "num_database": 18916, "protocol": "msls_per_city"},
             "a|b": {"recall@1": 100.0}}
  assert results_markdown(results, ns=(1, 5)) == (
      "|  | R@1 | R@5 | queries | database | protocol |\n"
      "|:---|---:|---:|---:|---:|:---|\n"
      "| untrained | 12.3 | 50.0 | 740 | 18916 | msls_per_city |\n"
      "| a\\|b | 100.0 | - | - | - | - |\n")


def test_thumbnail_descriptors_of_jpegs(tmp_path):
  colors = [(200, 100, 50), (10, 250, 128), (0, 0, 0)]
  paths = [_write(tmp_path / f"{i}.jpg", (60, 80), c, fmt="JPEG") for i, c in enumerate(colors)]
  d = thumbnail_descriptors(paths)
  assert d.shape == (3, 8 * 12 * 3) and d.dtype == np.float32
  assert d.min() >= 0.0 and d.max() <= 1.0
  for row, color in zip(d, colors):
    np.testing.assert_allclose(row.reshape(8, 12, 3), np.broadcast_to(np.array(color) / 255,
                                                                       (8, 12, 3)), atol=4 / 255)


def test_thumbnail_is_pil_bilinear_in_hwc_order_and_threads_agree(tmp_path):
  rng = np.random.default_rng(0)
  arrays = [rng.integers(0, 256, size=(24, 36, 3), dtype=np.uint8) for _ in range(20)]
  paths = []
  for i, a in enumerate(arrays):
    paths.append(str(tmp_path / f"r{i}.png"))
    Image.fromarray(a).save(paths[-1])
  seq = thumbnail_descriptors(paths, size=(4, 6), num_threads=1)
  par = thumbnail_descriptors(paths, size=(4, 6), num_threads=2)
  np.testing.assert_array_equal(seq, par)
  want = np.asarray(Image.fromarray(arrays[7]).resize((6, 4), Image.Resampling.BILINEAR),
                    np.float32).reshape(-1) / 255
  np.testing.assert_array_equal(seq[7], want)


def test_thumbnail_errors(tmp_path):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(ValueError, match="cannot decode image .*bad.jpg"):
    thumbnail_descriptors([str(bad)])
  with pytest.raises(ValueError, match="size must be"):
    thumbnail_descriptors([str(bad)], size=(0, 4))
  assert thumbnail_descriptors([]).shape == (0, 288)

"""Export a place index of the tiny demo world and localize photos in it: the saved index finds
the neighbours the in-memory evaluation finds, Recall@N from localize's CSVs equals evaluation's,
an interrupted export resumes, and mismatched or unreadable inputs give clear errors."""

import shutil

import numpy as np
import pytest
from PIL import Image

import gcl_jax
from gcl_jax.evaluation import extract, protocols, run as eval_run
from gcl_jax.localize import export as export_lib, index as index_lib, localize as localize_lib
from gcl_jax.train import train
from test_end_to_end import tiny_demo_config


def tiny_config(num_steps=2):
  c = tiny_demo_config(num_steps)
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = num_steps
  c.eval.before_training = c.eval.thumbnail_baseline = c.eval.after_training = False
  c.eval.cache_descriptors = False
  c.export.shard_size = 40
  c.localize.k = 20
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("localize") / "run"
  train.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


def evaluate_in_memory(config, workdir):
  """Evaluation of the latest checkpoint, as --mode=eval computes it (result, details)."""
  run = train.Run(config, str(workdir), train=False)
  _, state, _ = run.create_state()
  return run.evaluate(run.describe(state)), run.data.val


def query_dir(workdir):
  return workdir / "data" / "synthetic_msls" / "train_val" / "synth_val" / "query" / "images"


def rankings_from_csvs(out, query_table, database_table):
  """(len(query), k) database rows ranked for each query, read back from per_photo/<key>.csv."""
  row_of = {str(k): i for i, k in enumerate(database_table.keys)}
  ranked = []
  for key in query_table.keys:
    rows = localize_lib.read_photo_csv(str(out / "per_photo" / f"{key}.csv"))
    ranked.append([row_of[k] for k in rows["keys"]])
  return np.asarray(ranked, np.int64)


@pytest.mark.slow
def test_export_and_localize_match_evaluation(trained, tmp_path, monkeypatch):
  config = tiny_config()
  config.export.dir = str(tmp_path / "index")
  calls = []
  real_extract = extract.extract_descriptors

  def counting(embed, params, model_state, paths, *args, **kwargs):
    calls.append(len(paths))
    return real_extract(embed, params, model_state, paths, *args, **kwargs)

  monkeypatch.setattr(extract, "extract_descriptors", counting)
  manifest = export_lib.export(config, str(trained), train.Run)
  n = manifest["num_images"]
  chunks = sorted(p.name for p in (tmp_path / "index" / "descriptors").glob("*.npy"))
  assert calls == [min(40, n - s) for s in range(0, n, 40)]
  assert chunks == [export_lib.chunk_name(s, min(n, s + 40)) for s in range(0, n, 40)]
  assert manifest["model"]["step"] == 2 and manifest["preprocessing"]["image_size"] == [32, 48]

  # Resume: a lost chunk (and the index files) is all that a rerun describes again.
  (tmp_path / "index" / "descriptors" / chunks[1]).unlink()
  (tmp_path / "index" / "index.faiss").unlink()
  calls.clear()
  again = export_lib.export(config, str(trained), train.Run)
  assert calls == [min(40, n - 40)] and again["fingerprint"] == manifest["fingerprint"]

  (result, details), val = evaluate_in_memory(config, trained)
  _, query, database = val[0]
  city = details[0]
  index = gcl_jax.load_index(config.export.dir)
  assert list(index.keys) == list(database.keys)

  # Python: search the evaluated queries by path and as in-memory arrays of another size.
  paths = city.query_paths()
  matches = index.search(paths, k=20)
  np.testing.assert_array_equal(matches.indices, city.ranked)
  np.testing.assert_allclose(matches.distances, city.distances, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(matches.positions, database.utm[city.ranked])
  decoded = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:3]]
  np.testing.assert_array_equal(index.search(decoded, k=20).indices, city.ranked[:3])
  # Any size: an array is resized as its (lossless) file would be.
  big = [np.asarray(Image.fromarray(d).resize((150, 70), Image.NEAREST)) for d in decoded]
  for i, b in enumerate(big):
    Image.fromarray(b).save(tmp_path / f"big{i}.png")
  from_arrays = index.search(big, k=5)
  from_files = index.search([str(tmp_path / f"big{i}.png") for i in range(3)], k=5)
  np.testing.assert_array_equal(from_arrays.indices, from_files.indices)
  np.testing.assert_array_equal(from_arrays.distances, from_files.distances)

  # --mode=localize on the query folder plus one unreadable photo: Recall@N from its CSVs.
  photos = tmp_path / "photos"
  shutil.copytree(query_dir(trained), photos)
  (photos / "broken.jpg").write_bytes(b"not a jpeg")
  config.localize.index, config.localize.images = config.export.dir, str(photos)
  out = tmp_path / "localized"
  summary = localize_lib.localize(config, str(out))
  assert summary["localized"] == len(query) and summary["unreadable"] == [str(photos /
                                                                             "broken.jpg")]
  assert "broken.jpg" in (out / "unreadable.txt").read_text()
  ranked = rankings_from_csvs(out, query, database)
  np.testing.assert_array_equal(ranked[city.eval_query_idx], city.ranked)
  from_csv, _ = protocols.evaluate_rankings(
      [protocols.CityRanking(query, database, ranked, name="synth_val")],
      protocol=config.eval.protocol, radius_m=config.eval.radius_m, ns=tuple(config.eval.ns))
  for n_ in config.eval.ns:
    assert from_csv[f"recall@{n_}"] == result[f"recall@{n_}"]
  print({k: v for k, v in result.items() if k.startswith("recall@")})
  row = localize_lib.read_photo_csv(str(out / "per_photo" / f"{query.keys[0]}.csv"))
  np.testing.assert_array_equal(row["top1"], row["positions"][0])
  assert (out / "per_photo" / f"{query.keys[0]}.png").stat().st_size > 0
  assert len((out / "localized.csv").read_text().splitlines()) == len(query) + 1

  # Another preprocessing into the same directory is refused, naming the field.
  config.data.image_size = (48, 64)
  with pytest.raises(index_lib.IndexMismatchError,
                     match=r"preprocessing\.image_size: index \[32, 48\], given \[48, 64\]"):
    export_lib.export(config, str(trained), train.Run)


@pytest.mark.slow
def test_pca_whitened_export_matches_evaluation(trained, tmp_path):
  config = tiny_config()
  config.eval.pca_dim, config.eval.pca_fit = 8, "eval_database"
  config.export.dir = str(tmp_path / "index")
  config.export.index_type = "hnsw"
  config.export.hnsw_ef_search = 1000  # wider than the database: exact
  export_lib.export(config, str(trained), train.Run)
  (result, details), _ = evaluate_in_memory(config, trained)
  index = gcl_jax.load_index(config.export.dir)
  assert index.manifest["pca"]["dim"] == 8 and index.index_type == "hnsw"
  matches = index.search(details[0].query_paths(), k=20)
  np.testing.assert_array_equal(matches.indices, details[0].ranked)
  assert result["pca_dim"] == 8

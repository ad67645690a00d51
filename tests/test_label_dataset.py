"""`label_dataset`, `python -m gcl_jax.labels` and the per-query picture."""

import inspect
import json
import os

import numpy as np
import pytest

from gcl_jax.types import DatasetError
from gcl_jax.labels import city_pair_table, load_pair_table
from gcl_jax.labels.__main__ import main
from gcl_jax.data.msls import list_cities, read_msls_city, write_msls_city
from gcl_jax.labels.dataset import label_dataset, summarize
from gcl_jax.labels.fov2d import DEFAULT_PARAMS, pair_table_params
from gcl_jax.labels.plot import plot_query_labels
from gcl_jax.labels.synthetic_city import street_city
from gcl_jax.types import SIM_AMBIGUOUS, SIM_POSITIVE


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("msls")
  cities = {"alpha": street_city(60, 80, pano_every=20, seed=1),
            "beta": street_city(40, 50, seed=2)}
  for name, (q, d) in cities.items():
    write_msls_city(str(root), name, q, d)
  return root, cities


def read_cities(root, names, seen=None):
  """Reads the cities lazily, as the command line does; records each name in `seen` when read."""
  for name in names:
    if seen is not None:
      seen.append(name)
    yield (name, *read_msls_city(str(root), name))


def expected_summary(q, d, **params):
  t = city_pair_table(q, d, **params)
  dense = t.dense("psi")
  return t, {
      "queries": len(q), "database": len(d), "pairs": t.num_pairs,
      "psi_zero": int(np.sum(dense == 0)), "psi_soft": int(np.sum((dense > 0) & (dense < 0.5))),
      "psi_positive": int(np.sum(dense >= 0.5)),
      "sim_positive": int(np.sum(t.sim == SIM_POSITIVE)),
      "sim_ambiguous": int(np.sum(t.sim == SIM_AMBIGUOUS)),
      "query_panoramas": int(q.pano.sum()), "database_panoramas": int(d.pano.sum())}


def test_label_dataset_summary_and_cache(dataset, tmp_path):
  root, cities = dataset
  assert list_cities(str(root)) == ["alpha", "beta"]
  out = tmp_path / "labels"
  seen = []
  summary = label_dataset(read_cities(root, list_cities(str(root)), seen), str(out),
                          radius_m=40.0, progress=False)
  assert list(summary) == ["alpha", "beta"] and seen == ["alpha", "beta"]
  for name, (q, d) in cities.items():
    table, want = expected_summary(q, d, radius_m=40.0)
    got = summary[name]
    assert {k: got[k] for k in want} == want, name
    assert got["psi_zero"] + got["psi_soft"] + got["psi_positive"] == len(q) * len(d)
    assert got["cached"] is False and got["label_file"] == str(out / f"{name}_fov.npz")
    np.testing.assert_array_equal(load_pair_table(got["label_file"]).psi, table.psi)
  assert summary["alpha"]["query_panoramas"] == 3 and summary["alpha"]["database_panoramas"] == 4
  again = label_dataset(read_cities(root, ["beta"]), str(out), radius_m=40.0, progress=False)
  assert list(again) == ["beta"] and again["beta"]["cached"] is True
  # Other parameters: recomputed, not the cached file.
  third = label_dataset(read_cities(root, ["beta"]), str(out), radius_m=30.0, progress=False)
  assert third["beta"]["cached"] is False


def test_no_out_dir_writes_nothing(dataset):
  root, _ = dataset
  before = sorted(os.listdir(root))
  summary = label_dataset(read_cities(root, ["alpha"]), progress=False)
  assert summary["alpha"]["label_file"] is None
  assert sorted(os.listdir(root)) == before


def test_errors(dataset, tmp_path):
  root, _ = dataset
  with pytest.raises(FileNotFoundError, match="nowhere/train_val: directory not found"):
    list_cities(str(tmp_path / "nowhere"))
  with pytest.raises(DatasetError, match="train_val/gamma/query: directory not found"):
    label_dataset(read_cities(root, ["gamma"]), progress=False)
  with pytest.raises(ValueError, match="fov_deg must be in"):
    label_dataset(read_cities(root, ["alpha"]), fov_deg=0.0, progress=False)
  with pytest.raises(ValueError, match="no cities to label"):
    label_dataset(iter(()), progress=False)


def test_command_line(dataset, tmp_path, capsys):
  root, cities = dataset
  png = tmp_path / "pics" / "q5.png"
  assert main([f"--root={root}", f"--out_dir={tmp_path / 'l'}", "--no_progress", "--json",
               "--plot_city=alpha", "--plot_query=5", f"--plot_png={png}"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].split()[:4] == ["city", "queries", "database", "pairs"]
  assert lines[1].split()[:3] == ["alpha", "60", "80"] and lines[2].split()[0] == "beta"
  assert lines[3].split()[0] == "TOTAL" and lines[3].split()[1] == "100"
  js = json.loads(lines[4])
  assert js["alpha"]["queries"] == 60 and js["beta"]["database"] == 50
  assert lines[5] == f"wrote {png}"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("cities", ["--cities=beta", "--cities=all", "--cities="])
def test_command_line_cities_and_default_params(dataset, capsys, cities):
  """Named cities only, or all of them; the labels use fov2d.DEFAULT_PARAMS."""
  root, data = dataset
  assert main([f"--root={root}", cities, "--no_progress", "--json"]) == 0
  js = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert list(js) == (["beta"] if cities == "--cities=beta" else ["alpha", "beta"])
  _, want = expected_summary(*data["beta"], **DEFAULT_PARAMS)
  assert {k: js["beta"][k] for k in want} == want


def test_label_defaults_are_defined_once(capsys):
  for fn in (label_dataset, pair_table_params, city_pair_table):
    sig = inspect.signature(fn).parameters
    assert {k: sig[k].default for k in DEFAULT_PARAMS} == dict(DEFAULT_PARAMS), fn.__name__
  assert main(["--help"]) == 0
  out = capsys.readouterr().out
  assert "--root" in out and "--plot_png" in out
  for key, value in DEFAULT_PARAMS.items():
    assert f"--{key}" in out and f"(default: '{value}')" in out, key


@pytest.mark.parametrize("argv, status, message", [
    ([], 2, "flag --root=None: Flag --root must have a value"),
    (["--normalization=cosine"], 2, "flag --normalization=cosine: value should be one of"),
    (["--radius_m=far"], 2, "flag --radius_m=far: could not convert"),
    (["--fov_deg=0"], 2, "fov_deg must be in (0, 360]"),
    (["--cities=alpha,gamma"], 2, "--cities: 'gamma' not found under "),
    (["--plot_png=x.png"], 2, "--plot_png needs --plot_city"),
    (["--plot_city=gamma", "--plot_png=x.png"], 2, "--plot_city: 'gamma' not found under "),
    (["alpha"], 2, "unexpected arguments ['alpha']"),
    (["--split=test"], 1, "/test: directory not found (dataset root "),
])
def test_command_line_errors(dataset, capsys, argv, status, message):
  """A bad command line prints one line naming the fault and returns non-zero, no traceback."""
  root, _ = dataset
  argv = argv if not argv else [f"--root={root}", *argv]
  assert main([*argv, "--no_progress"]) == status
  captured = capsys.readouterr()
  assert captured.out == ""
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("python -m gcl_jax.labels: error: "), err
  assert message in err[0]


def test_command_line_no_city(tmp_path, capsys):
  (tmp_path / "train_val" / "not_a_city").mkdir(parents=True)
  assert main([f"--root={tmp_path}", "--no_progress"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"python -m gcl_jax.labels: error: no city under {tmp_path}/train_val (a city "
                 "is a folder with a query/ subfolder)"]


def test_plot_query_labels(dataset, tmp_path):
  _, cities = dataset
  q, d = cities["alpha"]
  table = city_pair_table(q, d)
  row = int(np.argmax(np.diff(table.indptr)))
  out = plot_query_labels(q, d, table, row, str(tmp_path / "x.png"))
  from matplotlib import image
  img = image.imread(out)
  assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
  assert img[..., :3].std() > 0.05  # not blank.
  with pytest.raises(IndexError, match="query row 60 is outside"):
    plot_query_labels(q, d, table, 60, str(tmp_path / "y.png"))
  with pytest.raises(ValueError, match="pair table is 60 x 80"):
    plot_query_labels(d, d, table, 0, str(tmp_path / "y.png"))


def test_summarize_counts_implicit_zeros():
  q, d = street_city(10, 10, seed=5)
  t = city_pair_table(q, d)
  s = summarize(t)
  assert s["psi_zero"] == 100 - s["psi_soft"] - s["psi_positive"] >= 100 - t.num_pairs
  assert "query_panoramas" not in s

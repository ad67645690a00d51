"""gcl_jax.load_model / Model.describe: the evaluation's descriptors, from paths and from arrays,
for a training workdir and for converted weights; the lazy top-level exports."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gcl_jax
from gcl_jax import api
from gcl_jax.models import weights
from gcl_jax.train import train
from test_end_to_end import tiny_demo_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def api_config():
  c = tiny_demo_config(2)
  c.eval.before_training = c.eval.thumbnail_baseline = c.eval.after_training = False
  c.eval.cache_descriptors = False
  c.eval.batch_size = 16
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir trained for 2 steps and the evaluation's descriptors of its first val city."""
  workdir = str(tmp_path_factory.mktemp("api") / "run")
  config = api_config()
  train.train_and_evaluate(config, workdir)
  run = train.Run(config, workdir, train=False)
  _, state, _ = run.create_state()
  name, query, database = run.data.val[0]
  describe = run.describe(state)
  tables = {"query": query, "database": database}
  return workdir, tables, {k: describe(t, f"{name} {k}") for k, t in tables.items()}


@pytest.mark.slow
def test_describe_paths_and_arrays_equal_the_evaluation(trained):
  workdir, tables, expected = trained
  model = gcl_jax.load_model(workdir)
  assert model.step == 2 and model.config.model.width == 8
  assert model.image_size == (32, 48)
  for what, table in tables.items():
    paths = list(table.full_paths())
    want = expected[what]
    assert want.shape == (len(paths), model.dim)
    got = model.describe(paths)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:5]]
    np.testing.assert_allclose(model.describe(arrays), want[:5], rtol=0, atol=2e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_any_size_batch_size_and_input_forms(trained):
  workdir, tables, _ = trained
  model = gcl_jax.load_model(workdir)
  path = tables["query"].full_paths()[0]
  image = np.asarray(Image.open(path).convert("RGB"))
  big = np.asarray(Image.fromarray(image).resize((300, 200), Image.NEAREST))
  grey = np.asarray(Image.fromarray(image).convert("L"))
  stack = np.stack([image, image[::-1]])
  one = model.describe(path)
  assert one.shape == (1, model.dim)
  np.testing.assert_array_equal(model.describe(image), one)
  # A 4-D array is N images; batch_size only changes how they are grouped.
  np.testing.assert_allclose(model.describe(stack, batch_size=1), model.describe(stack),
                             rtol=0, atol=2e-6)
  mixed = model.describe([path, big, grey, stack[1]])
  assert mixed.shape == (4, model.dim) and np.all(np.isfinite(mixed))
  np.testing.assert_allclose(mixed[0], one[0], rtol=0, atol=2e-6)
  # An image at another size is resized to config.data.image_size first.
  resized = np.asarray(Image.fromarray(big).resize((48, 32), Image.BILINEAR))
  np.testing.assert_allclose(mixed[1], model.describe(resized)[0], rtol=0, atol=2e-6)
  assert model.describe([]).shape == (0, model.dim)


@pytest.mark.slow
@pytest.mark.parametrize("method, fast_decode", [("pil", False), ("pil", True), ("tf", False)])
def test_prepare_equals_the_input_pipeline(trained, method, fast_decode):
  """The images describe() embeds are the evaluation pipeline's, pixel for pixel, for every
  config.data.resize_method (the world's 32 x 48 JPEGs read at 64 x 96 and at 16 x 24)."""
  from gcl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  workdir, tables, _ = trained
  paths = list(tables["query"].full_paths()[:3])
  for size in ((64, 96), (16, 24)):
    config = api.load_config(f"{workdir}/config.json")
    config.data.image_size, config.data.resize_method = size, method
    config.data.fast_decode = fast_decode
    model = gcl_jax.load_model(workdir, config=config)
    want = next(pipeline.image_batches(paths, batch_size=len(paths), image_size=size,
                                       mean=config.data.mean, std=config.data.std,
                                       resize_method=method, normalize=False,
                                       fast_decode=fast_decode))["image"]
    got = np.stack([model.prepare(p) for p in paths])
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_converted_weights_directory_gives_the_same_descriptors(trained, tmp_path):
  workdir, tables, expected = trained
  model = gcl_jax.load_model(workdir)
  from gcl_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  net = build_model(model.config.model)
  net.eval()
  nnx.update(net, model._params, model._model_state)  # pylint: disable=protected-access
  weights.save_imported(net, tmp_path / "converted")
  with pytest.raises(ValueError, match="not a training workdir.*pass config="):
    gcl_jax.load_model(tmp_path / "converted")
  converted = gcl_jax.load_model(tmp_path / "converted", config=f"{workdir}/config.json")
  assert converted.step is None and converted.dim == model.dim
  paths = list(tables["database"].full_paths())[:8]
  np.testing.assert_allclose(converted.describe(paths), expected["database"][:8], rtol=0,
                             atol=2e-6)


@pytest.mark.slow
def test_errors_name_the_fault(trained, tmp_path):
  workdir, _, _ = trained
  with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
    gcl_jax.load_model(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="no checkpoint of step 7; it has \\[1, 2\\]"):
    gcl_jax.load_model(workdir, step=7)
  model = gcl_jax.load_model(workdir)
  with pytest.raises(ValueError, match="image 1: expected a uint8 array.*float32"):
    model.describe([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float32)])
  with pytest.raises(FileNotFoundError, match="image 0: cannot read .*missing.jpg"):
    model.describe([str(tmp_path / "missing.jpg")])


def test_load_config_forms():
  config = api.load_config("configs/demo.py")
  assert config.model.arch == "resnet18" and tuple(config.data.image_size) == (64, 96)
  assert api.load_config("configs/msls.py:contrastive").loss.name == "contrastive"
  with pytest.raises(FileNotFoundError, match="configs/nope.py"):
    api.load_config("configs/nope.py")


def test_lazy_exports():
  assert gcl_jax.load_model is api.load_model
  from gcl_jax.labels import fov2d  # pylint: disable=g-import-not-at-top
  assert gcl_jax.fov_overlap is fov2d.fov_overlap
  assert "load_model" in dir(gcl_jax)
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    gcl_jax.nope  # pylint: disable=pointless-statement


def test_import_gcl_jax_is_light():
  """`import gcl_jax` loads neither JAX nor TensorFlow; the first use of a name imports its module
  (JAX, still no TensorFlow)."""
  code = ("import sys, gcl_jax; heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & "
          "{'jax', 'flax', 'tensorflow'}); before = heavy(); gcl_jax.load_model; "
          "print(before, 'jax' in heavy(), 'tensorflow' in heavy())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=REPO, check=False)
  assert out.stdout.strip() == "[] True False", out.stderr[-2000:]

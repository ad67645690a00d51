"""validate_config: each class of bad value names its key; every shipped config and sweep passes;
main.py turns a user's mistake into one line on stderr and a non-zero exit, writing nothing."""

import os
import subprocess
import sys

import pytest

from configs import default, demo, msls as msls_config, sweeps
from gcl_jax import validate
from gcl_jax.labels.io import LabelFileError
from gcl_jax.train import checkpoint
from gcl_jax.types import DatasetError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = dict(num_devices=8, process_count=1)  # conftest: 8 fake CPU devices
MODES = ("train", "eval", "compare", "check_data")


def _set(config, key: str, value) -> None:
  *parents, last = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[last] = value


def _msls(root, arg=None):
  c = msls_config.get_config(arg)
  c.data.root = str(root)
  return c


@pytest.mark.parametrize("arg", [None, "contrastive", "triplet"])
def test_shipped_configs_and_presets_validate(tmp_path, arg):
  for mode in (*MODES, "label"):
    validate.validate_config(_msls(tmp_path, arg), mode, **DEVICES)
  c = default.get_config()
  c.data.root = str(tmp_path)
  for mode in (*MODES, "label"):
    validate.validate_config(c, mode, **DEVICES)
  for mode in ("train", "eval", "compare", "label"):  # the generated world: no data.root
    validate.validate_config(demo.get_config(), mode, **DEVICES)


@pytest.mark.parametrize("name", sorted(sweeps.SWEEPS))
def test_every_sweep_run_validates(tmp_path, name):
  for overrides in sweeps.get_sweep(name):
    c = _msls(tmp_path)
    for key, value in overrides.items():
      _set(c, key, value)
    validate.validate_config(c, "train", **DEVICES)


# (key, bad value, mode, words the message must hold besides the key); on configs/demo.py.
BAD = [
    # names
    ("loss.name", "triplt", "train", ["'triplt'", "'triplet'"]),
    ("eval.protocol", "msls", "eval", ["'msls'", "msls_per_city"]),
    ("model.arch", "resnet51", "train", ["'resnet51'", "resnet50"]),
    ("model.pool", "gen", "eval", ["'gen'", "gem"]),
    ("data.format", "msl", "train", ["'msl'", "json_index"]),
    ("labels.kind", "fov3d", "train", ["'fov3d'", "pose3d"]),
    ("optimizer.name", "sgdd", "train", ["'sgdd'", "adamw"]),
    ("optimizer.schedule", "linear", "train", ["'linear'", "cosine"]),
    ("data.resize_method", "cv2", "train", ["'cv2'", "pil"]),
    ("data.bad_images", "ignore", "train", ["'ignore'", "skip"]),
    ("sampler.empty_stratum", "keep", "train", ["'keep'", "redraw"]),
    ("model.norm", "layer", "train", ["'layer'", "group"]),
    ("model.bn_mode", "eval", "train", ["'eval'", "frozen"]),
    ("model.dtype", "float16", "train", ["'float16'", "bfloat16"]),
    ("eval.pca_fit", "test", "eval", ["'test'", "eval_database"]),
    ("loss.mining.keep_rule", "all", "train", ["'all'", "violating"]),
    # sizes and ranges
    ("train.batch_size", 0, "train", ["0", "[1, inf]"]),
    ("train.batch_size", 12, "train", ["12", "devices (8)"]),
    ("train.num_steps", 0, "train", ["[1, inf]"]),
    ("eval.batch_size", -4, "eval", ["-4"]),
    ("model.width", 0, "train", ["[1, inf]"]),
    ("model.norm_groups", 3, "train", ["width=16"]),
    ("data.image_size", (0, 96), "train", ["2 positive integers"]),
    ("eval.ns", (), "eval", ["positive integers"]),
    ("eval.radius_m", -5.0, "eval", ["-5.0"]),
    ("loss.margin", 0.0, "train", ["0.0", "(0.0, inf]"]),
    ("sampler.strata_probs", (0.5, 0.5, 0.5), "train", ["summing to 1"]),
    ("labels.radius_m", -1.0, "train", ["-1.0"]),
    ("labels.normalization", "area", "train", ["'area'"]),
    ("optimizer.momentum", 1.0, "train", ["[0.0, 1.0)"]),
    ("optimizer.warmup_steps", 5000, "train", ["num_steps=1800"]),
    ("loss.mining.num_negative_samples", 2, "train", ["num_negatives=5"]),
    ("data.synthetic.image_height", 0, "train", ["image_height"]),
    # paths that must exist
    ("data.root", "/nonexistent/msls", "train", ["'/nonexistent/msls'", "does not exist"]),
    ("model.init_checkpoint", "/nonexistent/r50.pth", "eval", ["does not exist"]),
    ("labels.dir", "/nonexistent/x/labels", "train", ["/nonexistent/x", "does not exist"]),
    # combinations
    ("data.format", "at_format", "train", ["evaluation"]),
    ("labels.kind", "pose3d", "train", ["'fov'"]),
    ("compare.losses", "gcl,focal", "compare", ["focal"]),
]


@pytest.mark.parametrize("key,value,mode,words", BAD, ids=[f"{k}={v!r}" for k, v, *_ in BAD])
def test_bad_value_names_its_key(key, value, mode, words):
  c = demo.get_config()
  if key == "data.synthetic.image_height":
    c.data.synthetic.image_height = value
  else:
    _set(c, key, value)
  with pytest.raises(validate.ConfigError) as e:
    validate.validate_config(c, mode, **DEVICES)
  want = key if key != "data.synthetic.image_height" else "data.synthetic"
  assert e.value.key == want and str(e.value).startswith(f"config.{want}: ")
  for word in words:
    assert word in str(e.value), str(e.value)


def test_dependent_keys_and_formats(tmp_path):
  c = demo.get_config()
  c.data.train_cities = ("london", "paris")  # MSLS cities without data.root: the MSLS is missing
  with pytest.raises(validate.ConfigError, match=r"^config\.data\.root: .*london"):
    validate.validate_config(c, "train", **DEVICES)
  c = _msls(tmp_path)
  c.data.format, c.labels.kind = "json_index", "pose3d"
  with pytest.raises(validate.ConfigError) as e:
    validate.validate_config(c, "train", **DEVICES)
  assert e.value.key == "data.train_index"
  c.data.train_index = c.data.eval_index = str(tmp_path / "missing.json")
  with pytest.raises(validate.ConfigError, match="does not exist"):
    validate.validate_config(c, "train", **DEVICES)
  c = _msls(tmp_path)
  c.eval.protocol = "gt_h5"
  with pytest.raises(validate.ConfigError) as e:
    validate.validate_config(c, "eval", **DEVICES)
  assert e.value.key == "eval.gt_h5"
  c.eval.gt_h5 = str(tmp_path / "cph_gt.h5")
  with pytest.raises(validate.ConfigError, match=r"^config\.eval\.gt_h5: .*does not exist"):
    validate.validate_config(c, "eval", **DEVICES)
  c = _msls(tmp_path)
  c.train.batch_size, c.train.grad_accum_steps = 16, 4  # 16 is not a multiple of 4 x 8 devices
  with pytest.raises(validate.ConfigError, match=r"config\.train\.batch_size: 16 .* = 32"):
    validate.validate_config(c, "train", **DEVICES)
  validate.validate_config(c, "eval", **DEVICES)  # batch sizes of training only matter there
  validate.validate_config(c, "train", num_devices=4, process_count=2)
  with pytest.raises(validate.ConfigError, match="processes"):
    validate.validate_config(_msls(tmp_path), "train", num_devices=1, process_count=3)
  c = demo.get_config()
  with pytest.raises(validate.ConfigError, match="check_data checks a dataset on disk"):
    validate.validate_config(c, "check_data", **DEVICES)


def test_names_equal_the_libraries():
  from gcl_jax.data import pipeline, stream  # pylint: disable=g-import-not-at-top
  assert validate.RESIZE_METHODS == pipeline.RESIZE_METHODS
  assert validate.BAD_IMAGES == tuple(stream.BAD_IMAGES)


def test_user_errors_keep_their_builtin_base(tmp_path):
  for cls in (validate.ConfigError, DatasetError, LabelFileError,
              checkpoint.CheckpointMismatchError):
    assert issubclass(cls, UserError) and issubclass(cls, ValueError)
  workdir = tmp_path / "run"
  (workdir / "checkpoints" / "2").mkdir(parents=True)
  (workdir / "config.json").write_text(demo.get_config().to_json_best_effort())
  c = demo.get_config()
  c.model.arch = "resnet34"
  with pytest.raises(checkpoint.CheckpointMismatchError, match="model.arch: checkpoint "
                     "'resnet18', now 'resnet34'"):
    checkpoint.check_compatible_config(c, str(workdir))


def test_override_error():
  c = demo.get_config()
  assert validate.override_error(c, "loss.margn") == (
      "config.loss has no key 'margn'; did you mean 'margin'?")
  assert validate.override_error(c, "loss.xyz") == (
      "config.loss has no key 'xyz'; its keys: margin, mining, name")
  assert validate.override_error(c, "loss.margin.x") == (
      "config.loss.margin is a value (0.5), it has no key 'x'")
  assert validate.override_error(c, "loss.mining.margin") is None


def _main(*args, env=None):
  return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False,
                        env={**os.environ, **(env or {})})


def _error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_main_misspelt_override_is_one_line_and_traceback_on_request(tmp_path):
  args = ("--config=configs/demo.py", "--config.loss.margn=0.7", f"--workdir={tmp_path / 'run'}")
  out = _main(*args)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.strip() == ("python main.py: error: --config.loss.margn=0.7: config.loss has "
                                "no key 'margn'; did you mean 'margin'?")
  out = _main(*args, env={"GCL_JAX_TRACEBACK": "1"})
  assert out.returncode != 0 and "Traceback" in out.stderr


def test_main_unknown_loss_stops_before_anything_is_written(tmp_path):
  workdir = tmp_path / "run"
  out = _main("--config=configs/demo.py", "--config.loss.name=focal", f"--workdir={workdir}")
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert _error_lines(out.stderr) == [
      "python main.py: error: config.loss.name: 'focal' is not one of ['gcl', 'contrastive', "
      "'triplet']"]
  assert not workdir.exists()  # no world generated, no config.json, no results.json


def test_main_missing_data_root_is_one_line(tmp_path):
  out = _main("--config=configs/msls.py", "--config.data.root=/nonexistent/msls",
              f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
  assert _error_lines(out.stderr) == [
      "python main.py: error: config.data.root: '/nonexistent/msls' does not exist (the dataset "
      "root)"]

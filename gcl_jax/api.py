"""The small public Python API: load a trained model, describe images.

    import gcl_jax
    model = gcl_jax.load_model("runs/demo")           # a training workdir (latest checkpoint)
    desc = model.describe(["a.jpg", "b.jpg"])           # (2, model.dim) float32, L2-normalized
    desc = model.describe(np.zeros((4, 300, 400, 3), np.uint8))   # arrays of any size

    # Weights written by `python -m gcl_jax.models.weights` (or a PyTorch / safetensors / npz
    # state dict) need the config that describes their network:
    model = gcl_jax.load_model("weights/gcl_r50", config="configs/msls.py")

Images are prepared exactly as the evaluation prepares them (gcl_jax/data/pipeline.py): RGB,
resized to config.data.image_size without keeping the aspect ratio (PIL bilinear for
config.data.resize_method="pil"), normalized with config.data.mean / std on the device; then
embedded in evaluation mode by the jitted step the evaluation uses
(gcl_jax.train.step.make_embed_step), in batches of config.eval.batch_size over all local devices.
`describe` of a training workdir therefore returns the descriptors its evaluation computed.

Paths and PIL decoding need no TensorFlow; only config.data.resize_method="tf" imports it.
Single-process use (a notebook, a script); multi-host jobs use the evaluation entry points.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import io as std_io
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from gcl_jax import io, parallel
from gcl_jax.data import files

ImageLike = str | os.PathLike | np.ndarray  # one image: a path or a uint8 array

_STATE_DICT_SUFFIXES = (".pth", ".pt", ".tar", ".safetensors", ".npz")


def load_config(config: Any) -> ml_collections.ConfigDict:
  """A config from a ConfigDict, a dict, a config.json file or a config file `x.py[:arg]`.

  Raises:
    FileNotFoundError: the file does not exist.
    TypeError: `config` is none of the above.
  """
  if isinstance(config, ml_collections.ConfigDict):
    return config
  if isinstance(config, dict):
    return ml_collections.ConfigDict(config)
  if not isinstance(config, (str, os.PathLike)):
    raise TypeError(f"config must be a ConfigDict, a dict or a path to a config file "
                    f"(x.py[:arg] or config.json), got {type(config).__name__}")
  spec = os.fspath(config)
  path, arg = spec, ""
  if ".py:" in spec:  # configs/x.py:preset
    path, arg = spec.split(".py:", 1)
    path += ".py"
  if not io.exists(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  if path.endswith(".json"):
    return ml_collections.ConfigDict(io.read_json(path))
  if not path.endswith(".py"):
    raise ValueError(f"config file {path}: expected a .py config file (get_config(arg)) or a "
                     "config.json")
  module_spec = importlib.util.spec_from_file_location("_gcl_jax_loaded_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} has no get_config(arg) function")
  return module.get_config(arg or None)


def _is_workdir(path: str) -> bool:
  return io.exists(io.join(path, "config.json")) and io.isdir(io.join(path, "checkpoints"))


def _to_rgb(image: Image.Image) -> Image.Image:
  return image if image.mode == "RGB" else image.convert("RGB")


def _check_array(image: np.ndarray, index: int) -> np.ndarray:
  if image.dtype != np.uint8:
    raise ValueError(f"image {index}: expected a uint8 array (H, W, 3), got dtype {image.dtype}")
  if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4)):
    return image
  raise ValueError(f"image {index}: expected shape (H, W, 3), (H, W, 4) or (H, W), got "
                   f"{image.shape}")


class Model:
  """A descriptor network ready to describe images; made by `load_model`.

  Attributes:
    config: the full config (ml_collections.ConfigDict) the network was built from.
    dim: descriptor size D.
    step: training step of the loaded checkpoint (None for imported weights).
    source: where the weights came from.
  """

  def __init__(self, config: ml_collections.ConfigDict, model_def, state, *, source: str,
               step: int | None):
    # pylint: disable=g-import-not-at-top
    from gcl_jax.train import step as step_lib
    # pylint: enable=g-import-not-at-top
    self.config = config
    self.source = source
    self.step = step
    self._mesh = parallel.make_mesh()
    self._params, self._model_state = state.params, state.model_state
    self._embed = step_lib.make_embed_step(model_def, self._mesh, config.data.mean,
                                           config.data.std)
    n_dev = self._mesh.devices.size
    self._batch_size = -(-int(config.eval.batch_size) // n_dev) * n_dev
    height, width = self.image_size
    out = jax.eval_shape(self._embed, self._params, self._model_state,
                         jax.ShapeDtypeStruct((n_dev, height, width, 3), jnp.uint8))
    self.dim = int(out.shape[-1])

  @property
  def image_size(self) -> tuple[int, int]:
    """(H, W) every image is resized to (config.data.image_size)."""
    return int(self.config.data.image_size[0]), int(self.config.data.image_size[1])

  def __repr__(self) -> str:
    m = self.config.model
    return (f"Model({m.arch}/{m.pool}, width={m.width}, dim={self.dim}, "
            f"image_size={self.image_size}, step={self.step}, source={self.source!r})")

  def prepare(self, image: ImageLike, index: int = 0) -> np.ndarray:
    """One image (path or uint8 array) -> the (H, W, 3) uint8 image the network sees."""
    d = self.config.data
    height, width = self.image_size
    if isinstance(image, (str, os.PathLike)):
      path = os.fspath(image)
      try:
        data = files.read_bytes(path)
      except OSError as e:
        raise FileNotFoundError(f"image {index}: cannot read {path}: {e}") from e
      if d.resize_method == "tf":
        return self._tf_resize(data=data)
      try:
        with Image.open(std_io.BytesIO(data)) as im:
          if d.fast_decode and im.format == "JPEG":
            im.draft("RGB", (width, height))  # as the pipeline's fast_decode
          return np.asarray(_to_rgb(im).resize((width, height), Image.BILINEAR), np.uint8)
      except OSError as e:
        raise ValueError(f"image {index}: cannot decode {path}: {e}") from e
    array = _check_array(np.asarray(image), index)
    if array.ndim == 3 and array.shape[-1] == 1:
      array = array[..., 0]
    rgb = np.asarray(_to_rgb(Image.fromarray(array)))
    if d.resize_method == "tf":
      return self._tf_resize(array=rgb)
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR), np.uint8)

  def _tf_resize(self, *, data: bytes | None = None, array: np.ndarray | None = None):
    from gcl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    image = pipeline.decode_rgb(tf.constant(data)) if data is not None else tf.constant(array)
    return np.asarray(tf.cast(pipeline.resize(image, self.image_size, "tf"), tf.uint8))

  def describe(self, images: Sequence[ImageLike] | np.ndarray, *,
               batch_size: int | None = None) -> np.ndarray:
    """(N, D) float32 descriptors (L2-normalized rows) of N images, in order.

    Args:
      images: image paths (local, gs://, ...), uint8 arrays (H, W, 3) of any size, a mix of
        both, one (N, H, W, 3) uint8 array, or a single path / (H, W, 3) array (N = 1).
      batch_size: images per jitted call (default config.eval.batch_size), rounded up to a
        multiple of the local devices; the last batch is padded. Any value gives the same
        descriptors.

    Returns:
      The descriptors, one row per image.
    """
    if isinstance(images, (str, os.PathLike)):
      images = [images]
    elif isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8:
      images = [images]
    images = list(images)
    n = len(images)
    if n == 0:
      return np.zeros((0, self.dim), np.float32)
    n_dev = self._mesh.devices.size
    bs = self._batch_size if batch_size is None else -(-int(batch_size) // n_dev) * n_dev
    out = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
      for start in range(0, n, bs):
        chunk = list(range(start, min(start + bs, n)))
        batch = np.stack(list(pool.map(lambda i: self.prepare(images[i], i), chunk)))
        if len(batch) < bs:
          batch = np.concatenate([batch, np.repeat(batch[:1], bs - len(batch), axis=0)])
        global_images = parallel.global_batch({"image": batch}, self._mesh)["image"]
        desc = self._embed(self._params, self._model_state, global_images)
        out.append(np.asarray(jax.device_get(desc))[:len(chunk)])
    return np.concatenate(out).astype(np.float32)

  __call__ = describe


def load_model(checkpoint_or_converted_weights: str | os.PathLike, config: Any = None, *,
               step: int | None = None) -> Model:
  """Loads a descriptor network for `Model.describe`.

  Args:
    checkpoint_or_converted_weights: one of
      * a training workdir (<workdir>/config.json and <workdir>/checkpoints, as written by
        `python main.py --mode=train`): its latest orbax checkpoint, or `step`;
      * a directory written by `python -m gcl_jax.models.weights` (converted PyTorch weights);
      * a PyTorch .pth/.pt/.tar, .safetensors or .npz state dict (torchvision or the authors'
        GCL checkpoints; .pth needs torch).
    config: the config (a ConfigDict, a dict, a config.json or a `configs/x.py[:preset]` path).
      Default for a workdir: its config.json; required otherwise.
    step: checkpoint step of a workdir (default the latest).

  Returns:
    The Model (`.describe(images)`, `.config`, `.dim`).

  Raises:
    FileNotFoundError: nothing at the path, or a workdir without a checkpoint.
    ValueError: weights without a config, or weights that do not fit the config's network.
  """
  # pylint: disable=g-import-not-at-top
  from gcl_jax.models import build_model, weights
  from gcl_jax.train import checkpoint, state as state_lib
  # pylint: enable=g-import-not-at-top
  source = os.fspath(checkpoint_or_converted_weights)
  if not io.exists(source):
    raise FileNotFoundError(f"{source} does not exist (expected a training workdir, a converted "
                            "weights directory or a state dict file)")
  mesh = parallel.make_mesh()
  if _is_workdir(source):
    config = load_config(io.join(source, "config.json") if config is None else config)
    ckpt = checkpoint.Checkpointer(source, 1, int(config.train.max_checkpoints_to_keep))
    available = ckpt.manager.all_steps()
    if not available:
      raise FileNotFoundError(f"{ckpt.directory} holds no checkpoint: train first "
                              "(python main.py --mode=train)")
    if step is not None and step not in available:
      raise FileNotFoundError(f"{ckpt.directory} has no checkpoint of step {step}; it has "
                              f"{sorted(available)}")
    model_def, state, _ = state_lib.create_train_state(
        config, mesh, build_model(config.model, seed=config.seed))
    state = ckpt.restore(state, step)
    ckpt.close()
    return Model(config, model_def, state, source=source, step=int(jax.device_get(state.step)))
  if config is None:
    raise ValueError(f"{source} is not a training workdir (no config.json and checkpoints/): "
                     "pass config= (e.g. config='configs/msls.py') to describe the network its "
                     "weights belong to")
  if step is not None:
    raise ValueError(f"step={step} applies to training workdirs only; {source} is not one")
  config = load_config(config)
  model = build_model(config.model, seed=config.seed)
  if io.isdir(source):
    weights.restore_imported(source, model)
  elif source.endswith(_STATE_DICT_SUFFIXES):
    weights.convert_state_dict(weights.read_state_dict(source), model)
  else:
    raise ValueError(f"{source}: not a directory and not a state dict file "
                     f"({', '.join(_STATE_DICT_SUFFIXES)})")
  model_def, state, _ = state_lib.create_train_state(config, mesh, model)
  return Model(config, model_def, state, source=source, step=None)

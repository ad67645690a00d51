"""Describing photos with an index's own network and preprocessing (imports JAX and TensorFlow).

The network is rebuilt from the index's recorded model config and weights (model.npz); photos are
preprocessed with the index's recorded preprocessing (image size, mean, std, resize method), never
with the current config, so a photo is described exactly as the database images were:

* paths go through `gcl_jax.evaluation.extract.extract_descriptors` (the evaluation's tf.data
  pipeline, sharded over the devices and hosts);
* arrays (any size or aspect, uint8 RGB) are resized as the pipeline resizes decoded images (PIL
  bilinear, or the "tf" two-pass resize), so an array and its PNG file give the same descriptor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from gcl_jax import parallel
from gcl_jax.data import normalize as normalize_lib
from gcl_jax.evaluation import extract
from gcl_jax.localize import index as index_lib
from gcl_jax.models import build_model


def make_embed(graphdef, mesh: jax.sharding.Mesh, mean: Sequence[float],
               std: Sequence[float]) -> Callable:
  """embed(params, model_state, uint8 or float images) -> descriptors, jitted over `mesh`."""
  mean, std = tuple(mean), tuple(std)

  def embed(params, model_state, images):
    model = nnx.merge(graphdef, params, model_state)
    return model(normalize_lib.normalize_on_device(images, mean, std))

  rep = parallel.replicated(mesh)
  return jax.jit(embed, in_shardings=(rep, rep, parallel.batch_sharded(mesh)),
                 out_shardings=parallel.batch_sharded(mesh))


def restore_model(model_config: Mapping, weights: Mapping[str, np.ndarray], where: str = ""):
  """(eval graphdef, params, model_state) of the network `model_config` with `weights`
  (`gcl_jax.localize.index.weights_arrays` names)."""
  model = build_model(ml_collections.ConfigDict(dict(model_config)), seed=0)
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.as_pure(params), nnx.as_pure(rest)
  out = []
  for prefix, tree in (("params", params), ("state", rest)):
    paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = []
    for path, leaf in paths:
      name = prefix + jax.tree_util.keystr(path)
      if name not in weights:
        raise index_lib.IndexFormatError(f"{where}: weight {name!r} of the recorded model is "
                                         "missing")
      value = np.asarray(weights[name])
      if value.shape != np.shape(leaf):
        raise index_lib.IndexFormatError(f"{where}: weight {name!r} has shape {value.shape}, the "
                                         f"recorded model needs {np.shape(leaf)}")
      leaves.append(value.astype(np.asarray(leaf).dtype))
    out.append(jax.tree_util.tree_unflatten(treedef, leaves))
  expected = {p + jax.tree_util.keystr(k) for p, t in (("params", params), ("state", rest))
              for k, _ in jax.tree_util.tree_flatten_with_path(t)[0]}
  extra = sorted(set(weights) - expected)
  if extra:
    raise index_lib.IndexFormatError(f"{where}: weights {extra[:3]} are not part of the recorded "
                                     f"model ({len(extra)} extra)")
  return graphdef, out[0], out[1]


def resize_arrays(images, image_size: Sequence[int], method: str = "pil") -> np.ndarray:
  """uint8 RGB arrays of any size -> (N, H, W, 3) uint8, resized as the input pipeline does."""
  height, width = int(image_size[0]), int(image_size[1])
  out = np.empty((len(images), height, width, 3), np.uint8)
  for i, image in enumerate(images):
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
      raise ValueError(f"image {i}: expected an (H, W, 3) uint8 RGB array, got shape {a.shape} "
                       f"dtype {a.dtype}")
    if method == "pil":
      from PIL import Image  # pylint: disable=g-import-not-at-top
      out[i] = np.asarray(Image.fromarray(a).resize((width, height), Image.BILINEAR), np.uint8)
    else:
      from gcl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
      out[i] = pipeline.resize(a, (height, width), method).numpy().astype(np.uint8)
  return out


class Embedder:
  """Describes photos with a fixed network and preprocessing over all devices."""

  def __init__(self, model_config: Mapping, weights: Mapping[str, np.ndarray],
               preprocessing: Mapping, *, mesh: jax.sharding.Mesh | None = None, where: str = ""):
    self.preprocessing = dict(preprocessing)
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    graphdef, params, state = restore_model(model_config, weights, where)
    rep = parallel.replicated(self.mesh)
    self.params, self.model_state = jax.device_put(params, rep), jax.device_put(state, rep)
    self.embed = make_embed(graphdef, self.mesh, preprocessing["mean"], preprocessing["std"])

  @classmethod
  def from_index(cls, index: index_lib.PlaceIndex, mesh=None) -> Embedder:
    weights = index_lib.load_weights(index.directory, index.manifest)
    return cls(index.model_config, weights, index.preprocessing, mesh=mesh,
               where=f"{index.directory}/{index_lib.MODEL_FILE}")

  def pipeline_config(self, batch_size: int) -> ml_collections.ConfigDict:
    """The config sections `extract.extract_descriptors` reads, from the recorded preprocessing."""
    p = self.preprocessing
    return ml_collections.ConfigDict({
        "eval": {"batch_size": int(batch_size)},
        "data": {"image_size": tuple(p["image_size"]), "mean": tuple(p["mean"]),
                 "std": tuple(p["std"]), "resize_method": p["resize_method"],
                 "fast_decode": bool(p["fast_decode"]), "normalize_on_device": True}})

  def describe_paths(self, paths: Sequence[str], *, batch_size: int = 32,
                     desc: str = "describe") -> np.ndarray:
    return extract.extract_descriptors(self.embed, self.params, self.model_state,
                                       [str(p) for p in paths], self.pipeline_config(batch_size),
                                       self.mesh, desc=desc)

  def describe_arrays(self, images, *, batch_size: int = 32, progress: bool = False
                      ) -> np.ndarray:
    """Descriptors of in-memory images (every host passes the same images)."""
    p = self.preprocessing
    n_dev = self.mesh.devices.size
    batch_size = -(-int(batch_size) // n_dev) * n_dev
    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="describe", unit="batch", leave=False,
                      disable=not progress or not parallel.is_chief()):
      batch = resize_arrays(images[start:start + batch_size], p["image_size"],
                            p["resize_method"])
      n = len(batch)
      if n < batch_size:
        batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - n, axis=0)])
      images_global = jax.device_put(batch, parallel.batch_sharded(self.mesh))
      d = self.embed(self.params, self.model_state, images_global)
      out.append(np.asarray(jax.device_get(d))[:n])
    return np.concatenate(out).astype(np.float32)

  def describe(self, images, *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Photos as paths (str or path-like) or as uint8 RGB arrays (an (N, H, W, 3) array or a
    list of (H, W, 3) arrays of any sizes)."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
      images = images[None]
    if len(images) == 0:
      raise ValueError("no images to describe")
    if isinstance(images, np.ndarray) and images.dtype.kind in "US":
      images = images.tolist()
    if isinstance(images, np.ndarray) or not isinstance(images[0], (str, bytes)) and hasattr(
        images[0], "shape"):
      return self.describe_arrays(images, batch_size=batch_size, progress=progress)
    return self.describe_paths(images, batch_size=batch_size)

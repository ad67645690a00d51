"""gcl-jax: place recognition with graded similarity supervision (GCL) in JAX/Flax."""

__version__ = "0.1.0"

# The public API, imported on first use (PEP 562) so that `import gcl_jax` stays light: no JAX
# model code, no TensorFlow. name -> module that defines it.
_LAZY = {
    "load_model": "gcl_jax.api",
    "Model": "gcl_jax.api",
    "fov_overlap": "gcl_jax.labels.fov2d",
    "city_pair_table": "gcl_jax.labels.fov2d",
    "pose_overlap": "gcl_jax.labels.pose3d",
    "read_msls_city": "gcl_jax.data.msls",
    "generate_world": "gcl_jax.synthetic",
    "WorldConfig": "gcl_jax.synthetic",
    "load_index": "gcl_jax.localize.index",
    "PlaceIndex": "gcl_jax.localize.index",
}


def __getattr__(name: str):
  module = _LAZY.get(name)
  if module is None:
    raise AttributeError(f"module 'gcl_jax' has no attribute {name!r}")
  import importlib  # pylint: disable=g-import-not-at-top
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))

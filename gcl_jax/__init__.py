"""gcl-jax: place recognition with graded similarity supervision (GCL) in JAX/Flax."""

__version__ = "0.1.0"

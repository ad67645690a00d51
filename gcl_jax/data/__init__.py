"""Dataset readers, pair sampling and the tf.data input pipeline."""

from gcl_jax.types import ImageTable

"""TFDS builders for local copies of MSLS and `@`-format datasets (manual download).

Build once against a local copy, then stream from local disk or gs://:

    python -m gcl_jax.data.tfds_builders gcl_msls --manual_dir=/data/msls \
        --data_dir=gs://bucket/tfds
    python -m gcl_jax.data.tfds_builders gcl_at_format --manual_dir=/data/pitts30k \
        --data_dir=gs://bucket/tfds

or, where apache-beam is installed (the `tfds` CLI of tensorflow-datasets 4.9.10 imports it at
start-up), `tfds build --imports=gcl_jax.data.tfds_builders gcl_msls --manual_dir=...
--data_dir=... --file_format=tfrecord`. Both need the `importlib_resources` package, which
tensorflow-datasets 4.9.10 uses without declaring it.

    import gcl_jax.data.tfds_builders  # registers the builders with tfds
    ds = tfds.load("gcl_msls", split="cph_query", data_dir="gs://bucket/tfds",
                   decoders={"image": tfds.decode.SkipDecoding()})  # encoded JPEG bytes

Use `file_format=tfrecord`: `as_dataset()` cannot read array_record files. One example per image,
in the dataset's row order (shuffling is disabled and each example carries its `index`), with
`key, path, split, city, side, index, utm (E, N), heading (NaN = unknown), pano, night, in_all` and
the file's bytes as they are on disk (`image`, never re-encoded).
"""

from gcl_jax.data.tfds_builders.common import table_examples, table_features
from gcl_jax.data.tfds_builders.gcl_at_format import GclAtFormat
from gcl_jax.data.tfds_builders.gcl_msls import GclMsls

__all__ = ["GclAtFormat", "GclMsls", "table_examples", "table_features"]

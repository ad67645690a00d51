"""Mapping an area and localizing photos: place index directories, export and search.

`index` (the directory format, `PlaceIndex`, `load_index`) imports numpy and FAISS only; `describe`
(the network of an index), `export` (--mode=export) and `localize` (--mode=localize) import JAX:
import them as submodules.
"""

from gcl_jax.localize.index import IndexFormatError
from gcl_jax.localize.index import IndexMismatchError
from gcl_jax.localize.index import Matches
from gcl_jax.localize.index import PlaceIndex
from gcl_jax.localize.index import load_index

__all__ = ["IndexFormatError", "IndexMismatchError", "Matches", "PlaceIndex", "load_index"]

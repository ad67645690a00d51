"""Hard-negative tuples for the triplet baseline, mined with the current model as MSLS trains it.

The MSLS toolkit (mapillary_sls, `MSLS.new_epoch` / `update_subcache`) trains its triplet
baseline in sub-caches: every epoch the training queries are cut into sub-caches of about
`cache_queries` queries; for each sub-cache the current network embeds the queries, all their
positives (database images within `pos_dist_m`) and `num_negative_samples` random database
images; each query then gets its nearest positive and its `num_negatives` nearest valid
negatives in descriptor space, and the tuples train the network until the next sub-cache.

Here that is split into pure building blocks the training loop calls:

* `subcache_queries` / `num_subcaches`: which queries a sub-cache holds (deterministic in
  (seed, epoch)).
* `mine_subcache`: samples the negatives (deterministic in (seed, epoch, subcache)), calls the
  injected `embed(paths) -> (n, D) array` once per image set (queries, positives, negatives) and
  selects the tuples with `select_tuples`. The result depends only on its arguments and on the
  descriptors `embed` returns, so hosts that embed identically agree on every tuple.
* `TupleCache`: the tuples (city-local indices), their image paths, .npz save / load.

Behaviour of the toolkit that is kept:

* Training queries: non-panoramic queries with at least one non-panoramic database image within
  `pos_dist_m` (metres between camera centres); panoramas are never positives nor negatives.
* Queries of all cities share one index space (cities in list order); an epoch's permutation
  of it is cut with `np.array_split` into ceil(total / cache_queries) consecutive chunks of
  nearly equal size (never more than `cache_queries`), chunk order = training order.
* Negatives are sampled without replacement from the non-panoramic database images of ALL
  cities together, so most of a query's candidates come from other cities (always valid).
* The positive of a tuple is the query's nearest positive; its negatives are the
  `num_negatives` nearest valid sampled negatives, hardest first.
* The keep rule `keep_rule="toolkit"`: see `select_tuples`.

Deliberate changes (all documented where they act):

* Queries are a plain permutation (each query once per epoch, seeded), not the toolkit's
  `random.choices` with replacement weighted up for night and sideways queries; sampling is
  seeded everywhere (the toolkit uses unseeded global RNGs).
* Validity of a sampled negative is decided per query (farther than `neg_dist_m` from that
  query, or in another city); the toolkit removes a sampled image for every query of the
  sub-cache as soon as it lies within `neg_dist_m` of any one of them. Samples valid for no
  query are dropped before embedding.
* When the cities hold fewer non-panoramic database images than `num_negative_samples`, all of
  them are taken (the toolkit would fail).

This module needs numpy and gcl_jax.io only (no TensorFlow, no jax, nothing from train or
evaluation).
"""

from __future__ import annotations

import dataclasses
import io as io_lib
import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

from gcl_jax import io as gcl_io
from gcl_jax.data.pairs import CityPairs

# The toolkit's configured margin 0.1 enters both its loss and its mining rule as 0.1 ** 0.5
# (the same value as gcl_jax.losses.TOOLKIT_TRIPLET_MARGIN; not imported: losses needs jax).
TOOLKIT_MARGIN = 0.1 ** 0.5
KEEP_RULES = ("toolkit", "violating")

# Tags that keep the random streams of this module apart from each other.
_QUERY_STREAM = 0x716D696E  # queries of an epoch
_NEGATIVE_STREAM = 0x6E6D696E  # negatives of a sub-cache
_FORMAT_VERSION = 1

Embed = Callable[[list], np.ndarray]


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class MiningConfig:
  """Parameters of hard-negative mining (defaults: the MSLS toolkit's).

  Attributes:
    num_negatives: negatives per tuple (toolkit nNeg = 5).
    cache_queries: at most this many queries per sub-cache (toolkit cached_queries = 1000).
    num_negative_samples: random database images embedded per sub-cache as negative candidates
      (toolkit cached_negatives = 1000).
    margin: hinge margin in descriptor-distance units, used by the keep rule; the toolkit's
      0.1 ** 0.5 (its configured 0.1 enters through a square root). Pass the same value to
      `gcl_jax.losses.triplet_loss`.
    pos_dist_m: database images within this distance (metres) of a query are its positives.
    neg_dist_m: database images farther than this from a query are valid negatives.
    keep_rule: "toolkit" or "violating", see `select_tuples`.
  """

  num_negatives: int = 5
  cache_queries: int = 1000
  num_negative_samples: int = 1000
  margin: float = TOOLKIT_MARGIN
  pos_dist_m: float = 10.0
  neg_dist_m: float = 25.0
  keep_rule: str = "toolkit"

  def __post_init__(self):
    for name in ("num_negatives", "cache_queries", "num_negative_samples"):
      v = getattr(self, name)
      if not _is_int(v) or v < 1:
        raise ValueError(f"MiningConfig.{name} must be a positive integer, got {v!r}")
    if self.num_negative_samples < self.num_negatives:
      raise ValueError(f"MiningConfig.num_negative_samples ({self.num_negative_samples}) must be "
                       f">= num_negatives ({self.num_negatives})")
    for name in ("margin", "pos_dist_m", "neg_dist_m"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (
          math.isfinite(v) and v >= 0):
        raise ValueError(f"MiningConfig.{name} must be a finite non-negative number, got {v!r}")
    if self.pos_dist_m > self.neg_dist_m:
      raise ValueError(f"MiningConfig.pos_dist_m ({self.pos_dist_m!r}) must not exceed "
                       f"neg_dist_m ({self.neg_dist_m!r})")
    if self.keep_rule not in KEEP_RULES:
      raise ValueError(f"MiningConfig.keep_rule must be one of {KEEP_RULES}, got "
                       f"{self.keep_rule!r}")


class Selection(NamedTuple):
  """Tuples chosen by `select_tuples`, as row indices into its descriptor arrays.

  Attributes:
    query: (T,) int64 rows of `q_desc` that were kept, ascending.
    positive: (T,) int64 rows of `pos_desc`: each kept query's nearest positive.
    negatives: (T, N) int64 rows of `neg_desc`: its N nearest valid negatives, hardest first.
  """

  query: np.ndarray
  positive: np.ndarray
  negatives: np.ndarray


def _sq_dists(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(squared Euclidean distances, dot products) between the rows of a and b, float64."""
  dot = a @ b.T
  sq = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * dot
  return np.maximum(sq, 0.0), dot


def _as_desc(x, name: str, dim: int | None = None) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
    want = "(n, D)" if dim is None else f"(n, {dim})"
    raise ValueError(f"select_tuples: {name} must have shape {want}, got {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"select_tuples: {name} holds non-finite values")
  return x


def select_tuples(q_desc: np.ndarray, pos_desc: np.ndarray, pos_indptr: np.ndarray,
                  pos_rows: np.ndarray, neg_desc: np.ndarray, neg_valid: np.ndarray, *,
                  margin: float, num_negatives: int, keep_rule: str = "toolkit") -> Selection:
  """Nearest positive and hardest valid negatives of every query, and which queries to keep.

  Distances are Euclidean between descriptors (for L2-normalized descriptors, the order of the
  toolkit's dot products). Ties go to the lower row index.

  Keep rules (a query without positives is always dropped):

  * "toolkit" (MSLS `update_subcache`): with s = q . x, count the valid negatives whose
    s_n < s_p + margin, s_p the chosen positive's; keep the query when that count exceeds
    `num_negatives` (strictly). The toolkit puts dot-product similarities where the rule of
    pytorch-NetVLAD it descends from had distances, so the count is of negatives that are NOT
    much more similar than the positive (with an untrained or a trained network, nearly all):
    in effect a query is kept when it has more than `num_negatives` valid candidates, unless
    most of them are far more similar than its positive. The negatives are the nearest ones
    whether they count or not.
  * "violating": keep the query when it has at least `num_negatives` valid candidates and its
    hardest one violates the margin, d(q, n) < d(q, p) + margin, i.e. the tuple's triplet loss
    is not zero (the rule the toolkit's comments describe).

  Args:
    q_desc: (Q, D) query descriptors.
    pos_desc: (P, D) descriptors of the distinct positives of all queries.
    pos_indptr: (Q + 1,) CSR offsets: the positives of query i are
      pos_rows[pos_indptr[i]:pos_indptr[i + 1]].
    pos_rows: (K,) rows of `pos_desc`.
    neg_desc: (M, D) descriptors of the sampled negative candidates.
    neg_valid: (Q, M) bool, candidate j may be a negative of query i (farther than the
      negative distance, not a panorama).
    margin: hinge margin in descriptor-distance units (toolkit 0.1 ** 0.5).
    num_negatives: N, negatives per tuple.
    keep_rule: "toolkit" or "violating".

  Returns:
    `Selection` of the kept queries.

  Raises:
    ValueError: on inconsistent shapes or indices, or an invalid parameter (named).
  """
  if keep_rule not in KEEP_RULES:
    raise ValueError(f"select_tuples: keep_rule must be one of {KEEP_RULES}, got {keep_rule!r}")
  if not _is_int(num_negatives) or num_negatives < 1:
    raise ValueError(f"select_tuples: num_negatives must be a positive integer, got "
                     f"{num_negatives!r}")
  if not (math.isfinite(margin) and margin >= 0):
    raise ValueError(f"select_tuples: margin must be finite and >= 0, got {margin!r}")
  q_desc = _as_desc(q_desc, "q_desc")
  nq, dim = q_desc.shape
  pos_desc = _as_desc(pos_desc, "pos_desc", dim)
  neg_desc = _as_desc(neg_desc, "neg_desc", dim)
  pos_indptr = np.asarray(pos_indptr, np.int64)
  pos_rows = np.asarray(pos_rows, np.int64)
  neg_valid = np.asarray(neg_valid, bool)
  if pos_indptr.shape != (nq + 1,) or pos_indptr[0] != 0 or np.any(np.diff(pos_indptr) < 0):
    raise ValueError(f"select_tuples: pos_indptr must be ({nq + 1},) non-decreasing offsets from "
                     f"0, got shape {pos_indptr.shape}")
  if pos_rows.shape != (int(pos_indptr[-1]),):
    raise ValueError(f"select_tuples: pos_rows must have shape ({int(pos_indptr[-1])},) = "
                     f"pos_indptr[-1], got {pos_rows.shape}")
  if len(pos_rows) and (pos_rows.min() < 0 or pos_rows.max() >= len(pos_desc)):
    raise ValueError(f"select_tuples: pos_rows must index the {len(pos_desc)} rows of pos_desc, "
                     f"got values in [{pos_rows.min()}, {pos_rows.max()}]")
  if neg_valid.shape != (nq, len(neg_desc)):
    raise ValueError(f"select_tuples: neg_valid must have shape ({nq}, {len(neg_desc)}), got "
                     f"{neg_valid.shape}")
  n = num_negatives
  empty = Selection(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, n), np.int64))
  if nq == 0:
    return empty

  # Nearest positive of each query (its own positives only).
  counts = np.diff(pos_indptr)
  has_pos = counts > 0
  pos_choice = np.full(nq, -1, np.int64)
  d_pos = np.full(nq, np.inf)
  s_pos = np.full(nq, -np.inf)
  for i in np.flatnonzero(has_pos):
    rows = pos_rows[pos_indptr[i]:pos_indptr[i + 1]]
    sq, dot = _sq_dists(q_desc[i:i + 1], pos_desc[rows])
    k = int(np.lexsort((rows, sq[0]))[0])  # nearest; ties to the lower row
    pos_choice[i] = rows[k]
    d_pos[i] = math.sqrt(sq[0, k])
    s_pos[i] = dot[0, k]

  # Hardest valid negatives.
  if len(neg_desc):
    sq_neg, dot_neg = _sq_dists(q_desc, neg_desc)
  else:
    sq_neg = dot_neg = np.zeros((nq, 0))
  if neg_valid.shape[1] < n:  # fewer candidates than N: no query can be kept
    return empty
  masked = np.where(neg_valid, sq_neg, np.inf)
  order = np.argsort(masked, axis=1, kind="stable")[:, :n]
  enough = neg_valid.sum(axis=1) >= n
  d_hardest = np.sqrt(np.take_along_axis(masked, order[:, :1], axis=1)[:, 0])

  if keep_rule == "toolkit":
    counted = neg_valid & (dot_neg < s_pos[:, None] + margin)
    keep = has_pos & (counted.sum(axis=1) > n)
  else:
    keep = has_pos & enough & (d_hardest < d_pos + margin)
  kept = np.flatnonzero(keep)
  return Selection(kept.astype(np.int64), pos_choice[kept], order[kept].astype(np.int64))


@dataclasses.dataclass(frozen=True)
class TupleCache:
  """The training tuples of one sub-cache, in training order.

  Indices are city-local rows of the cities' ImageTables (the list passed to `mine_subcache`).
  Negatives may come from another city than their query (the toolkit samples them over all
  cities), hence `negative_city`.

  Attributes:
    city: (T,) int32 city of the query and its positive.
    query: (T,) int32 query row.
    positive: (T,) int32 database row of the positive.
    negatives: (T, N) int32 database rows of the negatives, hardest first.
    negative_city: (T, N) int32 city of each negative.
    images_forwarded: images embedded to mine this cache (queries + positives + negatives).
    num_queries: queries of the sub-cache before the keep rule.
  """

  city: np.ndarray
  query: np.ndarray
  positive: np.ndarray
  negatives: np.ndarray
  negative_city: np.ndarray
  images_forwarded: int
  num_queries: int

  def __post_init__(self):
    t = len(self.city)
    for name in ("query", "positive"):
      if np.shape(getattr(self, name)) != (t,):
        raise ValueError(f"TupleCache.{name} must have shape ({t},), got "
                         f"{np.shape(getattr(self, name))}")
    for name in ("negatives", "negative_city"):
      shape = np.shape(getattr(self, name))
      if len(shape) != 2 or shape[0] != t:
        raise ValueError(f"TupleCache.{name} must have shape ({t}, N), got {shape}")
    if np.shape(self.negatives) != np.shape(self.negative_city):
      raise ValueError(f"TupleCache.negative_city must have the shape of negatives "
                       f"{np.shape(self.negatives)}, got {np.shape(self.negative_city)}")
    for name in ("images_forwarded", "num_queries"):
      v = getattr(self, name)
      if not _is_int(v) or v < 0:
        raise ValueError(f"TupleCache.{name} must be a non-negative integer, got {v!r}")

  def __len__(self) -> int:
    return len(self.city)

  @property
  def num_negatives(self) -> int:
    return int(np.shape(self.negatives)[1])

  def paths(self, cities: Sequence[CityPairs]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full paths (q_paths (T,), p_paths (T,), n_paths (T, N)) of every tuple's images."""
    q_paths = [np.asarray(c.query.full_paths(), dtype=object) for c in cities]
    db_paths = [np.asarray(c.database.full_paths(), dtype=object) for c in cities]
    p0 = np.empty(len(self), object)
    p1 = np.empty(len(self), object)
    pn = np.empty(np.shape(self.negatives), object)
    for ci in range(len(cities)):
      m = self.city == ci
      p0[m] = q_paths[ci][self.query[m]]
      p1[m] = db_paths[ci][self.positive[m]]
      mn = self.negative_city == ci
      pn[mn] = db_paths[ci][self.negatives[mn]]
    for name, arr in (("city", self.city), ("negative_city", self.negative_city)):
      if arr.size and (arr.min() < 0 or arr.max() >= len(cities)):
        raise ValueError(f"TupleCache.{name} refers to city {int(arr.max())}, but only "
                         f"{len(cities)} cities were given")
    return p0.astype(str), p1.astype(str), pn.astype(str)

  def save(self, path: str) -> None:
    """Writes the cache to `path` (.npz, local or URL) atomically (gcl_jax.io.atomic_write_with)."""
    gcl_io.atomic_write_with(path, lambda f: np.savez(
        f, format_version=np.int64(_FORMAT_VERSION), city=self.city, query=self.query,
        positive=self.positive, negatives=self.negatives, negative_city=self.negative_city,
        images_forwarded=np.int64(self.images_forwarded), num_queries=np.int64(self.num_queries)))

  @classmethod
  def load(cls, path: str) -> "TupleCache":
    """Reads a cache written by `save`; a missing key or another format version is an error."""
    with np.load(io_lib.BytesIO(gcl_io.read_bytes(path)), allow_pickle=False) as z:
      keys = ("format_version", "city", "query", "positive", "negatives", "negative_city",
              "images_forwarded", "num_queries")
      missing = [k for k in keys if k not in z.files]
      if missing:
        raise ValueError(f"{path}: not a TupleCache file, missing key(s) {missing}")
      version = int(z["format_version"])
      if version != _FORMAT_VERSION:
        raise ValueError(f"{path}: TupleCache format_version {version}, this code reads "
                         f"{_FORMAT_VERSION}")
      return cls(city=z["city"].astype(np.int32), query=z["query"].astype(np.int32),
                 positive=z["positive"].astype(np.int32),
                 negatives=z["negatives"].astype(np.int32),
                 negative_city=z["negative_city"].astype(np.int32),
                 images_forwarded=int(z["images_forwarded"]), num_queries=int(z["num_queries"]))


def _check_cities(cities: Sequence[CityPairs], config: MiningConfig) -> None:
  if not isinstance(config, MiningConfig):
    raise TypeError(f"config must be a MiningConfig, got {type(config).__name__}")
  if len(cities) == 0:
    raise ValueError("mining needs at least one city, got an empty list")
  for c in cities:
    search = c.labels.params.get("search_radius_m") if c.labels.params else None
    if search is not None and config.neg_dist_m > float(search):
      raise ValueError(
          f"city {c.name!r}: its labels list pairs within {float(search)} m only, so negatives "
          f"cannot be checked against neg_dist_m = {config.neg_dist_m} m; relabel with a larger "
          f"neg_dist_m or lower MiningConfig.neg_dist_m")


def _positive_pairs(city: CityPairs, pos_dist_m: float) -> tuple[np.ndarray, np.ndarray]:
  """(query, database) rows of the listed pairs that make positives: both non-panoramic,
  camera centres within pos_dist_m; sorted by (query, database)."""
  lab = city.labels
  q_idx = lab.q_idx
  m = ((lab.dist <= pos_dist_m) & ~np.asarray(city.database.pano, bool)[lab.db_idx]
       & ~np.asarray(city.query.pano, bool)[q_idx])
  return q_idx[m].astype(np.int64), lab.db_idx[m].astype(np.int64)


def training_queries(cities: Sequence[CityPairs], config: MiningConfig) -> list[np.ndarray]:
  """Per city, the ascending query rows that can train: non-panoramic, with a positive."""
  _check_cities(cities, config)
  out = []
  for c in cities:
    q, _ = _positive_pairs(c, config.pos_dist_m)
    out.append(np.unique(q))
  return out


def num_subcaches(cities: Sequence[CityPairs], config: MiningConfig) -> int:
  """Sub-caches per epoch: ceil(number of training queries / cache_queries)."""
  total = sum(len(q) for q in training_queries(cities, config))
  return -(-total // config.cache_queries)


def _split_queries(queries: list[np.ndarray], seed: int, epoch: int,
                   config: MiningConfig) -> list[np.ndarray]:
  sizes = np.array([len(q) for q in queries], np.int64)
  total = int(sizes.sum())
  if total == 0:
    return []
  perm = np.random.default_rng([seed, epoch, _QUERY_STREAM]).permutation(total)
  return np.array_split(perm, -(-total // config.cache_queries))


def subcache_queries(cities: Sequence[CityPairs], *, seed: int, epoch: int, subcache: int,
                     config: MiningConfig) -> tuple[np.ndarray, np.ndarray]:
  """(city (Q,), query (Q,)) int32 of sub-cache `subcache` of epoch `epoch`, in mining order.

  The training queries of all cities (`training_queries`, cities in list order) form one index
  space; a permutation of it, deterministic in (seed, epoch), is cut with np.array_split into
  `num_subcaches` consecutive chunks of nearly equal size (at most cache_queries each). The
  chunk's order is kept: it is random, so the tuples come out shuffled. Q is an upper bound
  on the tuples the sub-cache yields.

  Raises:
    ValueError: when `subcache` is not in [0, num_subcaches).
  """
  for name, v in (("seed", seed), ("epoch", epoch), ("subcache", subcache)):
    if not _is_int(v) or v < 0:
      raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
  queries = training_queries(cities, config)
  chunks = _split_queries(queries, seed, epoch, config)
  if not subcache < len(chunks):
    raise ValueError(f"subcache {subcache} does not exist: epoch {epoch} has {len(chunks)} "
                     f"sub-caches ({sum(len(q) for q in queries)} training queries, "
                     f"cache_queries = {config.cache_queries})")
  g = chunks[subcache]
  offsets = np.concatenate([[0], np.cumsum([len(q) for q in queries])])
  city = np.searchsorted(offsets, g, side="right") - 1
  query = np.empty(len(g), np.int64)
  for ci, q in enumerate(queries):
    m = city == ci
    query[m] = q[g[m] - offsets[ci]]
  return city.astype(np.int32), query.astype(np.int32)


def _embed(embed: Embed, paths: list, what: str, dim: int | None) -> np.ndarray:
  out = np.asarray(embed(paths))
  if out.ndim != 2 or out.shape[0] != len(paths) or (dim is not None and out.shape[1] != dim):
    want = f"({len(paths)}, {'D' if dim is None else dim})"
    raise ValueError(f"embed returned shape {out.shape} for {len(paths)} {what} images; "
                     f"expected {want}")
  if not np.all(np.isfinite(out)):
    raise ValueError(f"embed returned non-finite descriptors for the {what} images")
  return out


def mine_subcache(cities: Sequence[CityPairs], *, seed: int, epoch: int, subcache: int,
                  config: MiningConfig, embed: Embed) -> TupleCache:
  """Mines the tuples of sub-cache `subcache` of epoch `epoch` with the current model.

  1. Queries: `subcache_queries`.
  2. Positives: every non-panoramic database image of the query's city within pos_dist_m of a
     query; each distinct image embedded once.
  3. Negative candidates: min(num_negative_samples, all) non-panoramic database images drawn
     without replacement from all cities together (deterministic in (seed, epoch, subcache),
     embedded in city / row order); a candidate is valid for a query when it lies in another
     city or farther than neg_dist_m from it (per query; see the module notes). Candidates
     valid for no query are not embedded.
  4. `embed` is called three times, with the query, positive and negative paths (lists of
     full paths; an empty list is not passed), each returning an (n, D) array.
  5. `select_tuples` with config.margin, config.num_negatives and config.keep_rule.

  Args:
    cities: the training cities (the same list, in the same order, for every call).
    seed, epoch, subcache: which sub-cache; subcache in [0, num_subcaches(cities, config)).
    config: the mining parameters.
    embed: paths -> (len(paths), D) descriptors of the current model (e.g. run sharded over
      the devices; every host must return the same values).

  Returns:
    The sub-cache's `TupleCache` (tuples in the sub-cache's random query order).
  """
  q_city, q_row = subcache_queries(cities, seed=seed, epoch=epoch, subcache=subcache,
                                   config=config)
  nq = len(q_city)
  db_sizes = np.array([len(c.database) for c in cities], np.int64)
  db_offsets = np.concatenate([[0], np.cumsum(db_sizes)])

  # Positives of every query, as global database keys (city offset + row).
  pos_lists = []
  pos_tables = [_positive_pairs(c, config.pos_dist_m) for c in cities]
  for ci, q in zip(q_city, q_row):
    pq, pdb = pos_tables[ci]
    lo, hi = np.searchsorted(pq, q, side="left"), np.searchsorted(pq, q, side="right")
    pos_lists.append(pdb[lo:hi] + db_offsets[ci])
  pos_indptr = np.concatenate([[0], np.cumsum([len(p) for p in pos_lists])]).astype(np.int64)
  flat = np.concatenate(pos_lists) if pos_lists else np.zeros(0, np.int64)
  pos_keys = np.unique(flat)
  pos_rows = np.searchsorted(pos_keys, flat)

  # Negative candidates over all cities' non-panoramic database images.
  nonpano = [np.flatnonzero(~np.asarray(c.database.pano, bool)) for c in cities]
  np_offsets = np.concatenate([[0], np.cumsum([len(x) for x in nonpano])])
  total_np = int(np_offsets[-1])
  rng = np.random.default_rng([seed, epoch, subcache, _NEGATIVE_STREAM])
  draw = np.sort(rng.choice(total_np, size=min(config.num_negative_samples, total_np),
                            replace=False))
  n_city = np.searchsorted(np_offsets, draw, side="right") - 1
  n_row = np.empty(len(draw), np.int64)
  for ci in range(len(cities)):
    m = n_city == ci
    n_row[m] = nonpano[ci][draw[m] - np_offsets[ci]]
  valid = np.ones((nq, len(draw)), bool)
  column = {}
  for ci in np.unique(n_city):
    col = np.full(len(cities[ci].database), -1, np.int64)
    col[n_row[n_city == ci]] = np.flatnonzero(n_city == ci)
    column[int(ci)] = col
  for i, (ci, q) in enumerate(zip(q_city, q_row)):
    col = column.get(int(ci))
    if col is None:
      continue
    lab = cities[ci].labels
    s = slice(int(lab.indptr[q]), int(lab.indptr[q + 1]))
    near = lab.db_idx[s][lab.dist[s] <= config.neg_dist_m]
    c = col[near]
    valid[i, c[c >= 0]] = False
  useful = valid.any(axis=0)
  n_city, n_row, valid = n_city[useful], n_row[useful], valid[:, useful]

  # Embed the three image sets.
  q_paths_city = [c.query.full_paths() for c in cities]
  db_paths_city = [c.database.full_paths() for c in cities]
  q_paths = [q_paths_city[ci][q] for ci, q in zip(q_city, q_row)]
  pos_city = np.searchsorted(db_offsets, pos_keys, side="right") - 1
  p_paths = [db_paths_city[ci][k - db_offsets[ci]] for ci, k in zip(pos_city, pos_keys)]
  n_paths = [db_paths_city[ci][r] for ci, r in zip(n_city, n_row)]
  q_desc = _embed(embed, q_paths, "query", None)
  dim = q_desc.shape[1]
  p_desc = _embed(embed, p_paths, "positive", dim) if p_paths else np.zeros((0, dim))
  n_desc = _embed(embed, n_paths, "negative", dim) if n_paths else np.zeros((0, dim))

  sel = select_tuples(q_desc, p_desc, pos_indptr, pos_rows, n_desc, valid, margin=config.margin,
                      num_negatives=config.num_negatives, keep_rule=config.keep_rule)
  p_key = pos_keys[sel.positive]
  p_city = pos_city[sel.positive]
  return TupleCache(
      city=q_city[sel.query].astype(np.int32), query=q_row[sel.query].astype(np.int32),
      positive=(p_key - db_offsets[p_city]).astype(np.int32),
      negatives=n_row[sel.negatives].astype(np.int32).reshape(-1, config.num_negatives),
      negative_city=n_city[sel.negatives].astype(np.int32).reshape(-1, config.num_negatives),
      images_forwarded=int(len(q_paths) + len(p_paths) + len(n_paths)), num_queries=int(nq))

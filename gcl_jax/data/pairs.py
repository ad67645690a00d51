"""Per-epoch training pairs with the authors' stratified sampling, deterministic in (seed, epoch).

Queries of all training cities form one global index space (cities in config order). Each epoch
draws a random permutation of it and walks it in chunks of `chunk_size` queries, each chunk
sorted (the authors' 10,000-query caches). For every non-panoramic query one database image of
the same city is drawn:

* graded ("gcl"): a stratum with probabilities `strata_probs` among non-panoramic database
  images: positives psi >= pos_threshold, soft negatives 0 < psi < pos_threshold, hard
  negatives psi == 0; the pair's label is psi.
* binary ("contrastive"): positives sim == 1 or negatives sim == 0, 50/50; label 1 or 0.

When the drawn stratum is empty the query is dropped for this epoch ("drop", the authors'
behaviour) or the stratum is redrawn among the non-empty ones ("redraw").
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gcl_jax.types import ImageTable
from gcl_jax.types import SIM_NEGATIVE, SIM_POSITIVE, PairTable


@dataclasses.dataclass(frozen=True)
class CityPairs:
  """One training city: its query and database tables and its sparse labels.

  `exclude_self`: the query and database tables are the same frames (6-DoF scenes), so query q is
  never paired with database row q, in any stratum.
  """
  name: str
  query: ImageTable
  database: ImageTable
  labels: PairTable
  exclude_self: bool = False

  def __post_init__(self):
    if self.exclude_self and len(self.query) != len(self.database):
      raise ValueError(f"city {self.name!r}: exclude_self needs the same frames as queries and "
                       f"database, got {len(self.query)} x {len(self.database)}")
    if (self.labels.num_queries, self.labels.num_database) != (len(self.query), len(self.database)):
      raise ValueError(
          f"labels of city {self.name!r} are for {self.labels.num_queries} queries x "
          f"{self.labels.num_database} database images, but the city has {len(self.query)} x "
          f"{len(self.database)}: the label table is stale or belongs to another city")


@dataclasses.dataclass(frozen=True)
class EpochPairs:
  """The pairs of one epoch, in training order."""
  city: np.ndarray  # (P,) int32 index into the list of cities
  query: np.ndarray  # (P,) int32 city-local query index
  database: np.ndarray  # (P,) int32 city-local database index
  label: np.ndarray  # (P,) float32 psi (graded) or 0/1 (binary)
  stratum: np.ndarray  # (P,) int8 stratum drawn (graded: 0 pos, 1 soft, 2 hard; binary: 0 pos, 1 neg)

  def __len__(self) -> int:
    return len(self.label)

  def paths(self, cities: list[CityPairs]) -> tuple[np.ndarray, np.ndarray]:
    """Full paths of the two images of every pair."""
    q_paths = [np.asarray(c.query.full_paths()) for c in cities]
    db_paths = [np.asarray(c.database.full_paths()) for c in cities]
    p0 = np.empty(len(self), object)
    p1 = np.empty(len(self), object)
    for ci in range(len(cities)):
      m = self.city == ci
      p0[m] = q_paths[ci][self.query[m]]
      p1[m] = db_paths[ci][self.database[m]]
    return p0.astype(str), p1.astype(str)


def _strata(city: CityPairs, q: int, binary: bool, pos_threshold: float):
  """Candidate sets of query q: explicit index arrays, or None for 'all non-pano minus listed'."""
  db_idx, psi, sim = city.labels.row(q)
  keep = ~city.database.pano[db_idx]
  if city.exclude_self:
    keep &= db_idx != q
  db_idx, psi, sim = db_idx[keep], psi[keep], sim[keep]
  # The last set is excluded from the complement (negatives); so is q itself with exclude_self.
  self_ = [q] if city.exclude_self and not city.database.pano[q] else []
  if binary:
    positives = db_idx[sim == SIM_POSITIVE]
    not_negative = db_idx[sim != SIM_NEGATIVE]  # listed pairs that are not negatives
    return positives, np.append(not_negative, self_).astype(db_idx.dtype)
  positives = db_idx[psi >= pos_threshold]
  soft = db_idx[(psi > 0) & (psi < pos_threshold)]
  return positives, soft, np.append(db_idx[psi > 0], self_).astype(db_idx.dtype)


def _draw_complement(rng: np.random.Generator, nonpano: np.ndarray, excluded: np.ndarray) -> int:
  """Uniform draw from nonpano minus excluded (rejection sampling; excluded is small)."""
  excluded_set = set(excluded.tolist())
  while True:
    j = int(nonpano[rng.integers(len(nonpano))])
    if j not in excluded_set:
      return j


def sample_epoch(cities: list[CityPairs], *, seed: int, epoch: int, binary: bool = False,
                 strata_probs=(0.5, 0.25, 0.25), pos_threshold: float = 0.5,
                 empty_stratum: str = "drop", chunk_size: int = 10000) -> EpochPairs:
  """Draws the pairs of one epoch; the result depends only on the arguments."""
  if empty_stratum not in ("drop", "redraw"):
    raise ValueError(f"empty_stratum must be 'drop' or 'redraw', got {empty_stratum!r}")
  probs = np.array((0.5, 0.5) if binary else strata_probs, np.float64)
  if len(probs) != (2 if binary else 3) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
    raise ValueError(f"strata_probs must be 3 non-negative numbers summing to 1, got {strata_probs}")
  sizes = np.array([len(c.query) for c in cities])
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  total = int(offsets[-1])
  nonpano = [np.flatnonzero(~c.database.pano) for c in cities]
  perm = np.random.default_rng([seed, epoch]).permutation(total)
  out = {k: [] for k in ("city", "query", "database", "label", "stratum")}
  for chunk_id, start in enumerate(range(0, total, chunk_size)):
    rng = np.random.default_rng([seed, epoch, chunk_id])
    for g in np.sort(perm[start:start + chunk_size]):
      ci = int(np.searchsorted(offsets, g, side="right") - 1)
      city, q = cities[ci], int(g - offsets[ci])
      if city.query.pano[q] or len(nonpano[ci]) == 0:
        continue
      sets = _strata(city, q, binary, pos_threshold)
      listed_nonneg = sets[-1]
      # Sizes of the strata; the last one (negatives) is the complement of the listed pairs.
      n = [len(s) for s in sets[:-1]] + [len(nonpano[ci]) - len(listed_nonneg)]
      s = int(rng.choice(len(probs), p=probs))
      if n[s] == 0:
        if empty_stratum == "drop":
          continue
        p = probs * (np.array(n) > 0)
        if p.sum() == 0:
          continue
        s = int(rng.choice(len(probs), p=p / p.sum()))
      if s == len(probs) - 1:
        j = _draw_complement(rng, nonpano[ci], listed_nonneg)
        label = 0.0
      else:
        j = int(sets[s][rng.integers(n[s])])
        label = 1.0 if binary else float(_psi(city, q, j))
      out["city"].append(ci)
      out["query"].append(q)
      out["database"].append(j)
      out["label"].append(label)
      out["stratum"].append(s)
  return EpochPairs(
      city=np.asarray(out["city"], np.int32), query=np.asarray(out["query"], np.int32),
      database=np.asarray(out["database"], np.int32),
      label=np.asarray(out["label"], np.float32), stratum=np.asarray(out["stratum"], np.int8))


def _psi(city: CityPairs, q: int, j: int) -> float:
  db_idx, psi, _ = city.labels.row(q)
  k = np.searchsorted(db_idx, j)
  return float(psi[k]) if k < len(db_idx) and db_idx[k] == j else 0.0

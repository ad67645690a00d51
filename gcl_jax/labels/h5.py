"""Reading (and writing) the authors' released `<city>_gt.h5` label files as sparse PairTables.

File format (GCL_REFERENCE.md section 2.2): one HDF5 file per MSLS city,
`<root>/train_val/<city>_gt.h5`, with two 2-D datasets of shape [N_query, N_database]:

    fov   float   graded FoV overlap in [0, 1]
    sim   0/1     binary label (1 positive, 0 negative)

Row i is the i-th query of the city (CSV order), column j the j-th database image. The matrices are
dense (30k x 30k float = 3.6 GB for the largest cities), so `read_gt_h5` reads them in blocks of
rows (h5py slicing reads only those rows from disk) and keeps only the pairs with fov > 0 or sim == 1.
Unlisted pairs then mean psi = 0 and sim = negative, exactly the PairTable convention. The
distance between camera centres is not in the file: `dist` is NaN.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from gcl_jax.types import PairTable, SIM_NEGATIVE, SIM_POSITIVE, UserError

METHOD = "authors-gt-h5/1"  # recorded in PairTable.params["method"].
_BLOCK_ROWS = 256  # rows per read: 256 x 30k float64 = 61 MB at most per dataset.


class H5LabelError(UserError, ValueError):
  """A `<city>_gt.h5` file is missing a dataset, has the wrong shape or holds invalid values."""


def _dataset(f: h5py.File, path: str, key: str) -> h5py.Dataset:
  """Dataset `key` of the open file `f`, as a 2-D dataset; raises H5LabelError naming the file."""
  if key not in f:
    raise H5LabelError(f"{path}: no dataset `{key}`; the file has {sorted(f.keys())}")
  d = f[key]
  if not isinstance(d, h5py.Dataset):
    raise H5LabelError(f"{path}: `{key}` is a group, not a dataset")
  if d.ndim != 2:
    raise H5LabelError(f"{path}: dataset `{key}` must be 2-D [num_queries, num_database], got "
                       f"shape {d.shape} (condensed 1-D TB-Places/7-Scenes files are not "
                       f"supported)")
  return d


def read_gt_h5(path: str, num_queries: int | None = None, num_database: int | None = None, *,
               block_rows: int = _BLOCK_ROWS) -> PairTable:
  """Reads the authors' `<city>_gt.h5` (datasets `fov` and `sim`) into a sparse PairTable.

  Rows are read in blocks of `block_rows` (never the whole matrix); a pair is listed when
  fov > 0 or sim == 1. psi = fov (float32), sim = SIM_POSITIVE where the file has 1 and
  SIM_NEGATIVE where it has 0, dist = NaN (unknown).

  Args:
    path: the .h5 file.
    num_queries, num_database: sizes of the city's query and database tables (e.g.
      `len(query_table)`); when given, the datasets' shape must match them.
    block_rows: number of rows read at a time.

  Returns:
    PairTable with params {"method", "source_file", "num_rows_read"}.

  Raises:
    FileNotFoundError: if `path` does not exist.
    H5LabelError: if the file is not HDF5, lacks `fov` or `sim`, the shapes differ from each other
      or from the city's table sizes, or a value is invalid (fov NaN or outside [0, 1], sim not
      0/1); the message names the file, dataset, and the row/column and value at fault.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"label file {path} does not exist")
  if block_rows < 1:
    raise ValueError(f"block_rows must be >= 1, got {block_rows!r}")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise H5LabelError(f"{path}: not a readable HDF5 file: {e}") from e
  with f:
    fov = _dataset(f, path, "fov")
    sim = _dataset(f, path, "sim")
    if fov.shape != sim.shape:
      raise H5LabelError(f"{path}: dataset `fov` has shape {fov.shape} but `sim` has {sim.shape}")
    nq, ndb = (int(n) for n in fov.shape)
    for what, want, got in (("queries", num_queries, nq), ("database images", num_database, ndb)):
      if want is not None and int(want) != got:
        axis = "rows" if what == "queries" else "columns"
        raise H5LabelError(f"{path}: datasets `fov`/`sim` have {got} {axis} (shape {fov.shape}) "
                           f"but the city has {int(want)} {what}; the file belongs to another city or "
                           f"the CSVs changed")
    counts = np.zeros(nq, np.int64)
    db_parts, psi_parts, sim_parts = [], [], []
    for r0 in range(0, nq, block_rows):
      r1 = min(r0 + block_rows, nq)
      fb = np.asarray(fov[r0:r1, :], np.float64)
      sb = np.asarray(sim[r0:r1, :], np.float64)
      bad = ~((fb >= 0.0) & (fb <= 1.0))  # also catches NaN.
      if bad.any():
        i, j = np.argwhere(bad)[0]
        raise H5LabelError(f"{path}: dataset `fov` row {r0 + i} column {j} has value "
                           f"{float(fb[i, j])!r}, expected a number in [0, 1]")
      bad = ~((sb == 0.0) | (sb == 1.0))
      if bad.any():
        i, j = np.argwhere(bad)[0]
        raise H5LabelError(f"{path}: dataset `sim` row {r0 + i} column {j} has value "
                           f"{float(sb[i, j])!r}, expected 0 or 1")
      keep = (fb > 0.0) | (sb == 1.0)
      rows, cols = np.nonzero(keep)  # row-major: sorted by (row, column).
      counts[r0:r1] = np.bincount(rows, minlength=r1 - r0)
      db_parts.append(cols.astype(np.int32))
      psi_parts.append(fb[rows, cols].astype(np.float32))
      sim_parts.append(np.where(sb[rows, cols] == 1.0, SIM_POSITIVE, SIM_NEGATIVE).astype(np.int8))

  def cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

  indptr = np.zeros(nq + 1, np.int64)
  np.cumsum(counts, out=indptr[1:])
  db_idx = cat(db_parts, np.int32)
  return PairTable(num_queries=nq, num_database=ndb, indptr=indptr, db_idx=db_idx,
                   psi=cat(psi_parts, np.float32), sim=cat(sim_parts, np.int8),
                   dist=np.full(len(db_idx), np.nan, np.float32),
                   params={"method": METHOD, "source_file": os.path.abspath(path)})


def write_gt_h5(path: str, table: PairTable, *, block_rows: int = _BLOCK_ROWS) -> None:
  """Writes `table` in the authors' `<city>_gt.h5` layout (dense `fov` float32 and `sim` uint8).

  sim is 1 for SIM_POSITIVE pairs and 0 otherwise (the authors' files have no ambiguous value).
  Rows are written in blocks, so memory stays bounded; the file itself is dense
  (num_queries x num_database x 5 bytes). Mainly for tests and for exporting labels to the authors'
  training code.

  Args:
    path: destination file (overwritten); its directory must exist.
    table: the labels.
    block_rows: rows written at a time.
  """
  nq, ndb = table.num_queries, table.num_database
  with h5py.File(path, "w") as f:
    fov = f.create_dataset("fov", shape=(nq, ndb), dtype=np.float32)
    sim = f.create_dataset("sim", shape=(nq, ndb), dtype=np.uint8)
    for r0 in range(0, nq, block_rows):
      r1 = min(r0 + block_rows, nq)
      s = slice(int(table.indptr[r0]), int(table.indptr[r1]))
      rows = np.repeat(np.arange(r1 - r0), np.diff(table.indptr[r0:r1 + 1]))
      fb = np.zeros((r1 - r0, ndb), np.float32)
      sb = np.zeros((r1 - r0, ndb), np.uint8)
      fb[rows, table.db_idx[s]] = table.psi[s]
      sb[rows, table.db_idx[s]] = table.sim[s] == SIM_POSITIVE
      fov[r0:r1, :] = fb
      sim[r0:r1, :] = sb

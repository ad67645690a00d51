"""Generalized Contrastive Loss (GCL) and the binary contrastive baseline.

Pure jnp; no knowledge of models or the training loop.

For descriptors a, b (already L2-normalized) and a graded label psi in [0, 1]:

    d = || a - b + eps ||_2           (eps = 1e-6 added to every coordinate, as PyTorch's
                                       PairwiseDistance does; keeps the gradient finite at a == b)
    L = psi * d^2 / 2 + (1 - psi) * max(margin - d, 0)^2 / 2

With binary labels psi in {0, 1} this is Hadsell et al.'s contrastive loss ("1 = similar").

The triplet baseline (`triplet_loss`) works on (query, positive, N negatives) tuples mined with
the current model (gcl_jax.data.mining), as the MSLS toolkit trains it:

    L = mean_n max(d(q, p) - d(q, n_n) + margin, 0)

with the same eps-shifted distance d. It is not a pair loss and is not in `LOSSES`.
"""

from __future__ import annotations

import jax.numpy as jnp

PAIRWISE_EPS = 1e-6


def pairwise_distance(x0: jnp.ndarray, x1: jnp.ndarray, eps: float = PAIRWISE_EPS) -> jnp.ndarray:
  """Row-wise ||x0 - x1 + eps||_2 over the last axis (PyTorch PairwiseDistance semantics)."""
  diff = x0 - x1 + eps
  return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def gcl_loss(x0: jnp.ndarray, x1: jnp.ndarray, label: jnp.ndarray, margin: float = 0.5) -> jnp.ndarray:
  """Per-pair Generalized Contrastive Loss.

  Args:
    x0, x1: (B, D) descriptors of the two images of each pair.
    label: (B,) graded similarity psi in [0, 1].
    margin: tau; negatives further apart than tau contribute nothing.

  Returns:
    (B,) float32 loss of each pair (reduce with a mean in the train step).
  """
  x0 = jnp.asarray(x0, jnp.float32)
  x1 = jnp.asarray(x1, jnp.float32)
  label = jnp.asarray(label, jnp.float32)
  d = pairwise_distance(x0, x1)
  hinge = jnp.maximum(margin - d, 0.0)
  return label * 0.5 * d * d + (1.0 - label) * 0.5 * hinge * hinge


def contrastive_loss(x0: jnp.ndarray, x1: jnp.ndarray, label: jnp.ndarray,
                     margin: float = 0.5) -> jnp.ndarray:
  """Binary contrastive loss: GCL restricted to labels in {0, 1} (label 1 = same place)."""
  label = jnp.asarray(label, jnp.float32)
  return gcl_loss(x0, x1, (label > 0.5).astype(jnp.float32), margin)


LOSSES = {"gcl": gcl_loss, "contrastive": contrastive_loss}


# The toolkit's configured margin is 0.1 and its training script builds
# nn.TripletMarginLoss(margin=0.1 ** 0.5); its mining rule uses the same 0.1 ** 0.5.
TOOLKIT_TRIPLET_MARGIN = 0.1 ** 0.5

# Every loss a config may name: the pair losses of `LOSSES`, then the tuple loss `triplet_loss`.
LOSS_NAMES = ("gcl", "contrastive", "triplet")


def triplet_loss(q: jnp.ndarray, p: jnp.ndarray, negs: jnp.ndarray,
                 margin: float = TOOLKIT_TRIPLET_MARGIN) -> jnp.ndarray:
  """Per-tuple triplet margin loss, averaged over the tuple's negatives.

  For each tuple b and negative n (PyTorch nn.TripletMarginLoss with p = 2, eps = 1e-6):

      l[b, n] = max(d(q_b, p_b) - d(q_b, negs_bn) + margin, 0),  d(a, b) = ||a - b + eps||_2

  and the tuple's loss is the mean of l[b, :] over its N negatives. The MSLS training script
  (Patch-NetVLAD's train_epoch, built on the toolkit's dataset) sums l over every tuple and
  negative of a batch (reduction='sum') and divides by the batch's number of negatives; with N
  negatives per tuple that is exactly `triplet_loss(...).mean()`. It passes margin
  0.1 ** 0.5 (its configured 0.1 enters through a square root), the default here.

  Args:
    q: (B, D) query descriptors.
    p: (B, D) positive descriptors.
    negs: (B, N) + (D,) negative descriptors, N >= 1.
    margin: hinge margin in descriptor-distance units.

  Returns:
    (B,) float32 loss of each tuple (reduce with a mean in the train step).

  Raises:
    ValueError: when the shapes do not fit together (the message gives them).
  """
  q = jnp.asarray(q, jnp.float32)
  p = jnp.asarray(p, jnp.float32)
  negs = jnp.asarray(negs, jnp.float32)
  if q.ndim != 2 or p.shape != q.shape:
    raise ValueError(f"triplet_loss: q and p must both have shape (B, D), got q {q.shape}, "
                     f"p {p.shape}")
  if negs.ndim != 3 or negs.shape[0] != q.shape[0] or negs.shape[2] != q.shape[1]:
    raise ValueError(f"triplet_loss: negs must have shape (B, N, D) = ({q.shape[0]}, N, "
                     f"{q.shape[1]}), got {negs.shape}")
  if negs.shape[1] == 0:
    raise ValueError("triplet_loss: negs has no negatives (N = 0)")
  d_pos = pairwise_distance(q, p)
  d_neg = pairwise_distance(q[:, None, :], negs)
  return jnp.mean(jnp.maximum(d_pos[:, None] - d_neg + margin, 0.0), axis=1)


def uses_mining(name: str) -> bool:
  """Whether the loss `name` trains on mined (query, positive, negatives) tuples, not pairs."""
  if name not in LOSS_NAMES:
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSS_NAMES)}")
  return name == "triplet"


def get_loss(name: str):
  """Looks up a pair loss (signature (x0, x1, label, margin)) by its config name."""
  if name == "triplet":
    raise ValueError("loss 'triplet' takes (query, positive, negatives) tuples, not pairs: call "
                     "gcl_jax.losses.triplet_loss(q, p, negs, margin) on tuples mined by "
                     "gcl_jax.data.mining (uses_mining('triplet') is True)")
  if name not in LOSSES:
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSS_NAMES)}")
  return LOSSES[name]

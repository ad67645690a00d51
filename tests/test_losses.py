"""GCL loss against the authors' code (golden_loss_*.json) and its closed forms."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcl_jax.losses import contrastive_loss, gcl_loss, pairwise_distance


@pytest.fixture
def golden(data_dir):
  return json.loads((data_dir / "golden_loss_gem.json").read_text())


@pytest.mark.parametrize("psi", [1.0, 0.75, 0.5, 0.25, 0.0])
def test_case_a_orthogonal(golden, psi):
  x0 = jnp.tile(jnp.eye(4)[:1], (2, 1))
  x1 = jnp.tile(jnp.eye(4)[1:2], (2, 1))
  out = gcl_loss(x0, x1, jnp.full((2,), psi))
  np.testing.assert_allclose(out, golden[f"A_psi{psi}"], atol=1e-6)


@pytest.mark.parametrize("psi", [1.0, 0.75, 0.5, 0.25, 0.0])
def test_case_b_close(golden, psi):
  x0 = jnp.tile(jnp.eye(4)[:1], (2, 1))
  x1 = jnp.tile(jnp.array([[np.cos(0.3), np.sin(0.3), 0.0, 0.0]], jnp.float32), (2, 1))
  np.testing.assert_allclose(pairwise_distance(x0, x1), golden["B_D"], atol=1e-6)
  np.testing.assert_allclose(gcl_loss(x0, x1, jnp.full((2,), psi)), golden[f"B_psi{psi}"], atol=1e-6)


def test_case_c_identical_inputs_have_finite_gradients(golden):
  x = jnp.full((2, 4), 0.5)
  label = jnp.array([0.0, 1.0])
  np.testing.assert_allclose(pairwise_distance(x, x), golden["C_D"], rtol=1e-5)
  np.testing.assert_allclose(gcl_loss(x, x, label), golden["C_loss"], atol=1e-6)
  grad = jax.grad(lambda a: gcl_loss(a, x, label).sum())(x)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad[0], golden["C_grad_x0_row0"], atol=1e-6)
  np.testing.assert_allclose(grad[1], golden["C_grad_x0_row1"], atol=1e-6)


def test_case_d_batch_and_mean_gradient(golden):
  x0, x1 = jnp.array(golden["D_x0"]), jnp.array(golden["D_x1"])
  label = jnp.array(golden["D_labels"])
  np.testing.assert_allclose(pairwise_distance(x0, x1), golden["D_dist"], atol=1e-6)
  np.testing.assert_allclose(gcl_loss(x0, x1, label), golden["D_per_pair"], atol=1e-6)
  mean = lambda a: gcl_loss(a, x1, label).mean()
  np.testing.assert_allclose(mean(x0), golden["D_mean"], atol=1e-6)
  np.testing.assert_allclose(jax.grad(mean)(x0), golden["D_grad_x0_of_mean"], atol=1e-6)


@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_deterministic_batch(data_dir, margin):
  g = json.loads((data_dir / "golden_loss_batch_deterministic.json").read_text())[f"tau{margin}"]
  i = np.arange(4)[:, None]
  k = np.arange(8)[None, :]
  x0 = np.sin(0.7 * (i + 1) * (k + 1))
  x1 = np.cos(0.3 * (i + 2) * (k + 1) + 0.5)
  x0 = jnp.array(x0 / np.linalg.norm(x0, axis=1, keepdims=True), jnp.float32)
  x1 = jnp.array(x1 / np.linalg.norm(x1, axis=1, keepdims=True), jnp.float32)
  label = jnp.array([1.0, 0.6, 0.2, 0.0])
  per_pair = gcl_loss(x0, x1, label, margin=margin)
  np.testing.assert_allclose(per_pair, g["per_pair"], atol=1e-6)
  mean = lambda a: gcl_loss(a, x1, label, margin=margin).mean()
  np.testing.assert_allclose(mean(x0), g["mean"], atol=1e-6)
  grad = jax.grad(mean)(x0)
  np.testing.assert_allclose(grad[0], g["grad_row0_of_mean"], atol=1e-6)
  # Accumulating two half-batch means, each divided by 2, gives the full-batch gradient.
  halves = [jax.grad(lambda a, s=s: gcl_loss(a, x1[s], label[s], margin=margin).mean() / 2)(x0[s])
            for s in (slice(0, 2), slice(2, 4))]
  np.testing.assert_allclose(jnp.concatenate(halves), grad, atol=1e-7)


def test_optimum_distance_is_one_minus_psi_times_margin():
  """For psi in [0, 1) the loss over d < margin is minimised at d* = (1 - psi) * margin."""
  margin = 0.5
  d = np.linspace(0, margin, 50001)
  for psi in np.random.default_rng(0).uniform(0, 1, 20):
    loss = psi * d**2 / 2 + (1 - psi) * np.maximum(margin - d, 0) ** 2 / 2
    # The same loss from gcl_loss with vectors at distance d along one axis.
    x0 = jnp.zeros((len(d), 2)) - 1e-6
    x1 = jnp.stack([jnp.asarray(d, jnp.float32), jnp.zeros(len(d))], axis=1)
    np.testing.assert_allclose(gcl_loss(x0, x1, jnp.full(len(d), psi), margin), loss, atol=1e-6)
    assert abs(d[np.argmin(loss)] - (1 - psi) * margin) < 1e-4


def test_contrastive_uses_binary_labels():
  x0 = jnp.eye(4)[:2]
  x1 = jnp.eye(4)[2:]
  np.testing.assert_allclose(contrastive_loss(x0, x1, jnp.array([0.7, 0.2])),
                             gcl_loss(x0, x1, jnp.array([1.0, 0.0])))


# ----- Triplet baseline -----------------------------------------------------------------------

from gcl_jax.losses import (LOSS_NAMES, TOOLKIT_TRIPLET_MARGIN, get_loss,  # noqa: E402
                            triplet_loss, uses_mining)


def triplet_loop(q, p, negs, margin, eps=1e-6):
  """Plain loops: nn.TripletMarginLoss(margin, p=2, eps) per (tuple, negative), mean over N."""
  out = []
  for b in range(len(q)):
    d_pos = np.sqrt(sum((q[b, k] - p[b, k] + eps) ** 2 for k in range(q.shape[1])))
    terms = []
    for n in range(negs.shape[1]):
      d_neg = np.sqrt(sum((q[b, k] - negs[b, n, k] + eps) ** 2 for k in range(q.shape[1])))
      terms.append(max(d_pos - d_neg + margin, 0.0))
    out.append(sum(terms) / len(terms))
  return np.array(out)


def test_toolkit_margin_is_sqrt_of_its_configured_margin():
  assert TOOLKIT_TRIPLET_MARGIN == pytest.approx(0.31622776601683794)


@pytest.mark.parametrize("margin", [TOOLKIT_TRIPLET_MARGIN, 0.1, 1.0])
def test_triplet_matches_independent_loops(margin):
  rng = np.random.default_rng(3)
  q, p = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  negs = rng.normal(size=(6, 4, 5))
  q, p = q / np.linalg.norm(q, axis=1, keepdims=True), p / np.linalg.norm(p, axis=1, keepdims=True)
  negs /= np.linalg.norm(negs, axis=2, keepdims=True)
  want = triplet_loop(q, p, negs, margin)
  assert np.any(want > 0) and np.all(want >= 0)
  np.testing.assert_allclose(triplet_loss(q, p, negs, margin), want, rtol=1e-5, atol=1e-6)


def test_triplet_mean_is_the_toolkit_batch_reduction():
  """The training script sums every (tuple, negative) term and divides by the negatives' count."""
  rng = np.random.default_rng(4)
  q, p, negs = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 5, 4))
  d = lambda a, b: np.linalg.norm(a - b + 1e-6, axis=-1)
  terms = np.maximum(d(q, p)[:, None] - d(q[:, None], negs) + 0.5, 0)
  np.testing.assert_allclose(triplet_loss(q, p, negs, 0.5).mean(), terms.sum() / terms.size,
                             rtol=1e-6)


def test_triplet_closed_forms_and_inactive_hinge():
  e = np.eye(4, dtype=np.float32)
  q = e[:1]
  p = e[:1]  # d(q, p) = ||eps|| = 2e-6
  negs = e[None, 1:3]  # two orthogonal negatives at sqrt(2)
  np.testing.assert_allclose(triplet_loss(q, p, negs, TOOLKIT_TRIPLET_MARGIN), [0.0])
  np.testing.assert_allclose(triplet_loss(q, p, negs, 2.0), [2.0 - np.sqrt(2.0) + 2e-6],
                             atol=1e-6)
  # One negative beyond the hinge, one inside it: the mean over the two.
  negs2 = np.stack([e[1], 0.9 * e[0] + 0.1 * e[1]])[None]
  d_in = np.linalg.norm(e[0] - negs2[0, 1] + 1e-6)
  np.testing.assert_allclose(triplet_loss(q, p, negs2, 0.5), [(0.5 + 2e-6 - d_in) / 2], atol=1e-6)
  # Inactive hinge: zero loss and zero gradient.
  g = jax.grad(lambda a: triplet_loss(a, p, negs, 0.3).sum())(jnp.asarray(q))
  np.testing.assert_array_equal(g, np.zeros_like(q))


def test_triplet_gradient_finite_at_query_equal_positive():
  x = jnp.full((2, 4), 0.5)
  negs = jnp.stack([x + 0.01, x - 0.02], axis=1)  # hinge active
  grad_q, grad_p = jax.grad(lambda a, b: triplet_loss(a, b, negs, 0.5).sum(), argnums=(0, 1))(x, x)
  assert np.all(np.isfinite(grad_q)) and np.all(np.isfinite(grad_p))
  # d(q, p) = ||eps|| along (1, 1, 1, 1): its gradient wrt p is -(eps / ||eps||) = -0.5 per
  # coordinate, and each tuple averages two active terms.
  np.testing.assert_allclose(grad_p, np.full((2, 4), -0.5), atol=1e-5)


def test_triplet_rejects_bad_shapes():
  with pytest.raises(ValueError, match=r"negs must have shape \(B, N, D\) = \(2, N, 3\)"):
    triplet_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="q and p"):
    triplet_loss(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((2, 1, 3)))


def test_loss_names_and_mining():
  assert LOSS_NAMES == ("gcl", "contrastive", "triplet")
  assert [uses_mining(n) for n in LOSS_NAMES] == [False, False, True]
  with pytest.raises(ValueError, match="'hinge'"):
    uses_mining("hinge")
  with pytest.raises(ValueError, match="triplet_loss"):
    get_loss("triplet")
  assert get_loss("gcl") is gcl_loss

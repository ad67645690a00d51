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

"""Freezing by the authors' `last_layer` rule (G3 trainable children) and BatchNorm modes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import default
from gcl_jax.models import build_model, freeze, summary


def _golden_children(data_dir, arch, last_layer):
  g = json.loads((data_dir / "golden_net_structure.json").read_text())
  return [int(s.split()[0]) for s in g[f"{arch}_last_layer={last_layer}"]["trained_children"]]


@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
@pytest.mark.parametrize("last_layer", [None, 1, 2, 3])
def test_trained_children_match_authors(data_dir, arch, last_layer):
  assert freeze.trained_children(arch, last_layer) == _golden_children(data_dir, arch, last_layer)


def _model(arch, width=4, norm="batch"):
  cfg = default.get_config().model
  cfg.arch, cfg.width, cfg.norm, cfg.norm_groups = arch, width, norm, 2
  return build_model(cfg)


def _by_name(tree):
  return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_vgg_off_by_one_conv5_1_stays_frozen():
  model = _model("vgg16")
  mask = _by_name(freeze.trainable_mask(model, "vgg16", 1))
  trained = sorted(k for k, v in mask.items() if v)
  # convs 11, 12 = children 26, 28 (conv5_2, conv5_3); conv 10 = child 24 (conv5_1) is frozen.
  assert trained == ["backbone.convs.11.bias", "backbone.convs.11.kernel",
                     "backbone.convs.12.bias", "backbone.convs.12.kernel", "pool.p"]
  mask2 = _by_name(freeze.trainable_mask(model, "vgg16", 2))
  assert {k for k, v in mask2.items() if v} == {
      f"backbone.convs.{i}.{n}" for i in range(7, 13) for n in ("bias", "kernel")} | {"pool.p"}


def test_resnet_masks_and_full_size_trainable_count():
  model = nnx.eval_shape(lambda: _model("resnet50", width=64))
  for last_layer, stages in ((None, None), (1, {"layer4"}), (2, {"layer3", "layer4"}),
                             (3, {"layer2", "layer3", "layer4"})):
    mask = _by_name(freeze.trainable_mask(model, "resnet50", last_layer))
    for name, m in mask.items():
      parts = name.split(".")
      expected = stages is None or parts[0] != "backbone" or parts[1] in stages
      assert m == expected, (last_layer, name)
  table = summary.parameter_table(model, freeze.trainable_mask(model, "resnet50", None))
  assert table.splitlines()[-3].split()[-1] == "23,508,033"  # golden n_params_trainable
  table = summary.parameter_table(model, freeze.trainable_mask(model, "resnet50", 1))
  assert "backbone.layer4.2.conv3.kernel" in table and "frozen" in table


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_frozen_parameters_get_no_update(opt):
  model = _model("resnet18", width=4)
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.as_pure(params), nnx.as_pure(rest)
  mask = freeze.trainable_mask(params, "resnet18", 1)
  base = optax.sgd(0.1, momentum=0.9) if opt == "sgd" else optax.adamw(1e-2, weight_decay=0.1)
  tx = freeze.freeze_optimizer(base, mask)
  opt_state = tx.init(params)
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))

  def loss(p, r):
    m = nnx.merge(graphdef, p, r)
    y = m(x)
    return jnp.sum(y[0] * y[1]), nnx.as_pure(nnx.state(m, nnx.Not(nnx.Param)))

  @jax.jit
  def step(p, r, s):
    (_, r), g = jax.value_and_grad(loss, has_aux=True)(p, r)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), r, s

  p = params
  for _ in range(3):
    p, rest, opt_state = step(p, rest, opt_state)
  before, after, m = _by_name(params), _by_name(p), _by_name(mask)
  for name in before:
    if m[name]:
      assert not np.array_equal(before[name], after[name]), name
    else:
      np.testing.assert_array_equal(before[name], after[name], err_msg=name)
  assert sum(m.values()) < len(m)


def test_batchnorm_modes():
  model = _model("resnet18", width=4)
  model.train()
  freeze.set_batchnorm_mode(model, "train")
  assert not model.backbone.bn1.use_running_average
  freeze.set_batchnorm_mode(model, "frozen_layers", "resnet18", 1)
  assert model.backbone.bn1.use_running_average
  assert model.backbone.layer3[0].bn1.use_running_average
  assert not model.backbone.layer4[0].bn1.use_running_average
  assert not model.backbone.layer4[0].downsample[1].use_running_average
  freeze.set_batchnorm_mode(model, "frozen")
  assert model.backbone.layer4[1].bn2.use_running_average
  stats = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
  model(jax.random.normal(jax.random.key(0), (2, 32, 32, 3)))
  jax.tree.map(np.testing.assert_array_equal, stats, nnx.state(model, nnx.BatchStat))
  with pytest.raises(ValueError, match="bn_mode"):
    freeze.set_batchnorm_mode(model, "eval")

"""Backbones, pooling layers and the place-recognition descriptor network."""

from gcl_jax.models.descriptor import DescriptorNet, build_model
from gcl_jax.models.pooling import GeM, NetVLAD, Whitening, l2_normalize
from gcl_jax.models.resnet import ResNet
from gcl_jax.models.vgg import VGG16

"""Constants, seeded random generators and procedural noise shared by the synthetic world.

Everything here is a pure function of its arguments (the noise textures are cached per scale),
so the world stays a deterministic function of its WorldConfig.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

PPM = 8.0  # Facade texels per metre at mip level 0.
LEVELS = 4  # Mip levels of the facade atlas (8, 4, 2, 1 texels per metre).
ATLAS_HEIGHT_M = 40.0  # Height of the facade atlas strip (tallest building incl. roof).
UTM_ZONE = 32
UTM_ORIGIN = (500_000.0, 5_500_000.0)  # City offsets are added to this (zone 32 north).
NEAR = 0.25  # Near clipping distance of the camera (metres).

_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))


def seeded_rng(*parts: int | str) -> np.random.Generator:
  """A generator seeded by a tuple of ints and strings (strings via CRC32, not hash())."""
  words = [p if isinstance(p, (int, np.integer)) else zlib.crc32(str(p).encode()) for p in parts]
  return np.random.default_rng(np.random.SeedSequence([int(w) % (2 ** 32) for w in words]))


def random_keys(rng: np.random.Generator, n: int, length: int = 22) -> list[str]:
  """n random alphanumeric keys of `length` characters (the shape of MSLS image keys)."""
  idx = rng.integers(0, len(_ALPHABET), size=(n, length))
  return ["".join(row) for row in _ALPHABET[idx]]


_NOISE_CACHE: dict[int, np.ndarray] = {}


def noise(scale: int) -> np.ndarray:
  """A tileable 256 x 256 smooth noise texture in [0, 1] (Gaussian-filtered white noise)."""
  if scale not in _NOISE_CACHE:
    rng = seeded_rng(1234, "noise", scale)
    white = rng.standard_normal((256, 256))
    fy = np.fft.fftfreq(256)[:, None]
    fx = np.fft.fftfreq(256)[None, :]
    kernel = np.exp(-2 * (math.pi * scale) ** 2 * (fx ** 2 + fy ** 2))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(white) * kernel))
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-9)
    _NOISE_CACHE[scale] = np.clip(0.5 + 0.18 * smooth, 0.0, 1.0).astype(np.float32)
  return _NOISE_CACHE[scale]


def sample_noise(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Nearest-neighbour lookup of a tileable texture at real-valued texel coordinates."""
  rows = np.floor(v).astype(np.int64) % tex.shape[0]
  return tex[rows, np.floor(u).astype(np.int64) % tex.shape[1]]


def hash01(a: np.ndarray, seed: int) -> np.ndarray:
  """A deterministic hash of integers to [0, 1)."""
  x = (np.asarray(a, np.uint64) * np.uint64(2654435761) + np.uint64(seed % (2 ** 31)) *
       np.uint64(40503) + np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(16)
  x = (x * np.uint64(0x45D9F3B)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(16)
  x = (x * np.uint64(0x45D9F3B)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(16)
  return (x.astype(np.float64) / 2.0 ** 32).astype(np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
  """sRGB-ish colours in [0, 1] to linear light (gamma 2.2)."""
  return np.power(np.clip(c, 0.0, 1.0), 2.2)

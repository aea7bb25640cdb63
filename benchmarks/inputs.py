"""The benchmarks' inputs, with NumPy alone (so that a process timing PyTorch need not import JAX)."""

import numpy as np


def images(count: int, seed: int = 0) -> np.ndarray:
    """Binary 32x32 images with MNIST's share of ink, zero on the 2-pixel border."""
    rng = np.random.default_rng(seed)
    x = np.zeros((count, 32, 32), np.float32)
    x[:, 2:30, 2:30] = rng.random((count, 28, 28)) < 0.13
    return x

"""Issue 35: how far 8, 6 and 4-bit weights (a linear scale per row of the first axis) move the laptop
encoders' means, in posterior standard deviations, on the first 200 test images.

    VNCA_DATA_DIR=... python benchmarks/encoder_bits.py
"""
import equinox as eqx
import jax
import numpy as np
import jax.numpy as jnp

from vnca.devices import use_cpu_cores

use_cpu_cores()
from vnca import pretrained
from vnca.data import load_binarized_mnist
x = jnp.asarray(load_binarized_mnist().test[:200], jnp.float32)
for name in ["doubling-laptop", "nondoubling-laptop"]:
    m = pretrained.load(name)
    mean, ls = jax.vmap(m.encoder)(x)
    for bits in (8, 6, 4):
        def q(a):
            if a.ndim < 2: return a
            w = np.asarray(a); flat = w.reshape(w.shape[0], -1)  # per first axis
            s = np.abs(flat).max(1, keepdims=True) / (2 ** (bits - 1) - 1)
            return jnp.asarray((np.round(flat / s) * s).reshape(w.shape))
        enc = jax.tree.map(lambda a: q(a) if eqx.is_array(a) else a, m.encoder)
        m2, l2 = jax.vmap(enc)(x)
        d = np.abs(np.asarray(m2 - mean)) / np.exp(np.asarray(ls))
        print(name, bits, "max |dmean|/std", d.max().round(3), "mean", d.mean().round(4), "max |dmean|", np.abs(np.asarray(m2-mean)).max().round(4))

"""What grows in a long run of a non-doubling model: 16 of measure.py's 64 test digits (the same
choice, seed 4) grown from their posterior means for 10,000 steps, and at chosen steps the median
over digits of log p(x | grid), how many score above -150, the hidden channels' RMS (median and
largest), and the largest logit and hidden value.

    PYTHONPATH=results/laptop/claims python results/laptop/claims/drift.py runs/nd-p05-long
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

import measure  # one JAX device per core, and `load` with a run's own patches
import vnca.nca
from vnca import figures
from vnca.data import load_binarized_mnist
from vnca.vae import bernoulli_log_likelihood

STEPS = 10_000
SHOWN = [32, 64, 128, 256, 500, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000]

model = measure.load(sys.argv[1])
data = load_binarized_mnist()
x = data.test[np.random.default_rng(4).choice(len(data.test), 64, replace=False)][:16].astype(np.float32)
decoder = model.decoder
means = figures.encode(model, x)[0]


@jax.jit
def grow(means, x, key):
    def one(z, image, k):
        keys = jax.random.split(k, STEPS)

        def body(state, t):
            # vnca.nca.step looked up here: a run's patches replace it
            state = vnca.nca.step(decoder.rule, state, keys[t], decoder.config.update_probability)
            hidden = state[..., 1:]
            return state, jnp.stack([bernoulli_log_likelihood(state[..., 0], image),
                                     jnp.sqrt((hidden**2).mean()), jnp.abs(state[..., 0]).max(),
                                     jnp.abs(hidden).max()])

        return jax.lax.scan(body, decoder.seed(z), jnp.arange(STEPS))[1]

    return jax.vmap(one)(means, x, jax.random.split(key, len(x)))


curves = np.asarray(grow(means, jnp.asarray(x), jax.random.key(5)))  # (digits, steps, 4)
print(f"{'step':>6} {'log p':>8} {'> -150':>7} {'RMS':>6} {'RMS max':>9} {'logit max':>10} {'hidden max':>11}")
for t in SHOWN:
    v = curves[:, t - 1]
    print(f"{t:>6} {np.median(v[:, 0]):>8.1f} {int((v[:, 0] > -150).sum()):>4}/16 {np.median(v[:, 1]):>6.2f} "
          f"{np.nanmax(v[:, 1]):>9.3g} {np.nanmax(v[:, 2]):>10.3g} {np.nanmax(v[:, 3]):>11.3g}")

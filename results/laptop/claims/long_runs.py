"""A picture of what a non-doubling model's digits become over long runs: 8 test digits (the
first 8 of the test set) and the Bernoulli means after 36 to 4,000 steps from their encoder means.

    PYTHONPATH=results/laptop/claims python results/laptop/claims/long_runs.py runs/nd-rest out.png
"""
import argparse

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import measure  # noqa: E402  (one device per core; loads runs with their patches)
from vnca.data import load_binarized_mnist  # noqa: E402
from vnca.nca import run  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("out")
a = p.parse_args()
model = measure.load(a.model)
x = jnp.asarray(load_binarized_mnist().test[:8], jnp.float32)
z = jax.vmap(model.encoder)(x)[0]
decoder = model.decoder
lengths = [36, 200, 500, 1000, 2000, 4000]
fig, axes = plt.subplots(8, len(lengths) + 1, figsize=(8, 9))
for i in range(8):
    axes[i, 0].imshow(x[i], cmap="gray_r")
axes[0, 0].set_title("input")
for j, steps in enumerate(lengths):
    keys = jax.random.split(jax.random.key(0), len(z))  # for random updates (p < 1)
    grow = jax.vmap(lambda z, k: run(decoder.rule, decoder.seed(z), steps, key=k,
                                     update_probability=decoder.config.update_probability))
    grown = jax.jit(grow)(z, keys)
    for i in range(8):
        axes[i, j + 1].imshow(jax.nn.sigmoid(grown[i, ..., 0]), cmap="gray_r", vmin=0, vmax=1)
    axes[0, j + 1].set_title(f"T={steps}")
for ax in axes.flat:
    ax.axis("off")
fig.savefig(a.out, dpi=70)

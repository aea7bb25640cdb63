"""A non-doubling run's 64 test digits (the claims' rows) left running for 3,000 steps with the rule
updating every cell (as trained) and half of them at random (the original's damage checkpoint).

    PYTHONPATH=results/laptop/claims python results/laptop/claims/probe_update_probability.py runs/nd-detach-persist
"""
import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

import patches
from vnca import claims
from vnca.data import load_binarized_mnist
from vnca.recipes import MODELS
from vnca.runs import CHECKPOINT, load_run

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

run = sys.argv[1]
args = patches.saved(run)
patches.apply(args, args.steps)  # the run's pool was patched: load it the same way
model = load_run(f"{run}/{CHECKPOINT}")[0].model
test = load_binarized_mnist().test
x = jnp.asarray(test[np.random.default_rng(4).choice(len(test), 64, False)], jnp.float32)
for p in (1.0, 0.5):
    config = dataclasses.replace(model.decoder.config, update_probability=p)
    skeleton = MODELS["nondoubling"][1](config, key=jax.random.key(0))
    probed = jax.tree.unflatten(jax.tree.structure(skeleton), jax.tree.leaves(model))
    curve = np.asarray(claims.log_p_by_step(probed, x, jax.random.fold_in(jax.random.key(12), 1), 3000))
    at = {s: round(float(curve[s - 1]), 1) for s in (16, 32, 64, 128, 256, 500, 1000, 2000, 3000)}
    print(f"p={p}: best in 32..64 {curve[31:64].max():.1f}; best {curve.max():.1f} at step "
          f"{int(curve.argmax()) + 1}; {at}", flush=True)

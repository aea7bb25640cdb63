"""Probe for issue 33: how fast can a laptop non-doubling decoder learn to read an informative z,
by width? The encoder is the shipped doubling-laptop one, frozen; the loss is -log p(x|z) with
z ~ q(z|x) (no KL, no pool), batch 8, T drawn in min..max. One CPU device (one core).

    JAX_NUM_CPU_DEVICES=1 python decoder_probe.py --hidden 128 --steps 2000 --out h128.jsonl
"""
import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vnca import pretrained
from vnca.data import batches, load_binarized_mnist
from vnca.nondoubling import NonDoublingConfig, nondoubling_vnca, sample_steps
from vnca.vae import bernoulli_log_likelihood

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

p = argparse.ArgumentParser()
p.add_argument("--hidden", type=int, default=32)
p.add_argument("--steps", type=int, default=2000)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--min-steps", type=int, default=28)
p.add_argument("--max-steps", type=int, default=40)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--out", required=True)
a = p.parse_args()

cfg = NonDoublingConfig(latent=32, hidden=a.hidden, min_steps=a.min_steps,
                        max_steps=a.max_steps, test_steps=32, encoder_width=16)
encoder = pretrained.load("doubling-laptop").encoder
decoder = nondoubling_vnca(cfg, key=jax.random.key(0)).decoder
opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(a.lr))
opt_state = opt.init(eqx.filter(decoder, eqx.is_inexact_array))


@eqx.filter_jit
def step(decoder, opt_state, x, key):
    k1, k2, k3 = jax.random.split(key, 3)
    T = sample_steps(k3, cfg)
    mean, log_scale = jax.vmap(encoder)(x)
    z = jax.lax.stop_gradient(mean + jnp.exp(log_scale) * jax.random.normal(k1, mean.shape))

    def loss(dec):
        keys = jax.random.split(k2, x.shape[0])
        ll = jax.vmap(lambda zz, xx, kk: bernoulli_log_likelihood(dec(zz, key=kk, steps=T), xx))(z, x, keys)
        return -ll.mean()

    value, grads = eqx.filter_value_and_grad(loss)(decoder)
    updates, opt_state = opt.update(grads, opt_state, eqx.filter(decoder, eqx.is_inexact_array))
    return eqx.apply_updates(decoder, updates), opt_state, value


data = load_binarized_mnist().train.astype(np.float32)
stream = batches(data, a.batch, jax.random.key(1))
params = sum(x.size for x in jax.tree.leaves(eqx.filter(decoder, eqx.is_array)))
t0, window = time.time(), []
with open(a.out, "w") as f:
    f.write(json.dumps({"args": vars(a), "decoder_parameters": int(params)}) + "\n")
    for i in range(1, a.steps + 1):
        decoder, opt_state, value = step(decoder, opt_state, jnp.asarray(next(stream)),
                                         jax.random.fold_in(jax.random.key(2), i))
        window.append(float(value))
        if i % 50 == 0:
            f.write(json.dumps({"step": i, "nll": float(np.mean(window)),
                                "s": round(time.time() - t0, 1)}) + "\n")
            f.flush()
            window = []

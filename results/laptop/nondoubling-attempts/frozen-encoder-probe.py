"""Can the laptop non-doubling decoder learn to use an informative z at all?
The encoder is the trained doubling-laptop one, frozen; the loss is -log p(x|z) with z ~ q(z|x)
(beta = 0), no pool. python frozen.py STEPS [latent hidden]"""
import sys, time, json
import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
from vnca import pretrained
from vnca.data import load_binarized_mnist, batches
from vnca.nondoubling import NonDoublingConfig, nondoubling_vnca, sample_steps
from vnca.step import optimiser
from vnca.vae import reparameterise, bernoulli_log_likelihood

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

steps = int(sys.argv[1])
cfg = NonDoublingConfig(latent=32, hidden=int(sys.argv[2]) if len(sys.argv) > 2 else 32, min_steps=28,
                        max_steps=40, test_steps=32, encoder_width=16)
encoder = pretrained.load("doubling-laptop").encoder
decoder = nondoubling_vnca(cfg, key=jax.random.key(0)).decoder
opt = optimiser(1e-3, 10.0)
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
stream = batches(data, 8, jax.random.key(1))
t0, window = time.time(), []
for i in range(1, steps + 1):
    decoder, opt_state, value = step(decoder, opt_state, jnp.asarray(next(stream), jnp.float32), jax.random.fold_in(jax.random.key(2), i))
    window.append(float(value))
    if i % 50 == 0:
        print(json.dumps({"step": i, "nll": float(np.mean(window)), "s": round(time.time() - t0)}), flush=True)
        window = []

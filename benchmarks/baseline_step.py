"""Where the laptop baseline's training step goes on a CPU (the numbers in the laptop chapter's
"Against PyTorch" section and issue 11's notes), on a quiet machine:

    python benchmarks/baseline_step.py                           # 2 CPU devices (import vnca's default)
    JAX_NUM_CPU_DEVICES=1 python benchmarks/baseline_step.py 16  # ELBO gradient of 16 images, 1 device
    JAX_NUM_CPU_DEVICES=1 taskset -c 0 python benchmarks/baseline_step.py 16   # ... on one core

With no argument: ms per step of `train_steps` (10 fused), of the same step with the optimiser update
sharded over the devices (ZeRO-1 style) and/or the state donated, and of the gradient alone. With a
batch size: the ELBO's forward pass and gradient on one device. Experiments, not package code.
"""
import sys

if len(sys.argv) > 1:
    import time, sys
    import jax, jax.numpy as jnp, equinox as eqx, numpy as np
    from vnca.train import train_config, init_state
    from vnca.vae import batch_elbo
    config = train_config("baseline", "laptop")
    model = init_state(config).model
    B = int(sys.argv[1])
    x = (jax.random.uniform(jax.random.key(0), (B, 32, 32)) < 0.13).astype(jnp.float32)
    def timeit(f, n=9):
        f(); f()
        ts = []
        for _ in range(n):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        return 1000 * np.median(ts)
    @eqx.filter_jit
    def g(model, x):
        return eqx.filter_grad(lambda m: -batch_elbo(m, x, jax.random.key(0), steps=None).elbo)(model)
    @eqx.filter_jit
    def f(model, x):
        return batch_elbo(model, x, jax.random.key(0), steps=None).elbo
    print(jax.device_count(), "batch", B, "elbo fwd", timeit(lambda: jax.block_until_ready(f(model, x))), "grad", timeit(lambda: jax.block_until_ready(g(model, x))))
else:
    import time, dataclasses, sys
    import jax, jax.numpy as jnp, equinox as eqx, numpy as np, optax
    sys.path.insert(0, __import__('os').path.dirname(__file__))
    from vnca.train import *
    from vnca.train import train_steps, optimiser
    from side_by_side import images
    name = sys.argv[1] if len(sys.argv) > 1 else "baseline"
    config = train_config(name, "laptop")
    steps = 10
    config = dataclasses.replace(config, steps_per_call=steps, log_every=steps, checkpoint_every=steps)
    mesh = data_mesh()
    state = place_state(init_state(config), mesh)
    batches = shard_batches(images(steps * config.batch_size).reshape(steps, config.batch_size, 32, 32), mesh)

    def timeit(f, n=5):
        f(); f()
        ts = []
        for _ in range(n):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        return np.median(ts)

    def full():
        global state
        state, m = train_steps(config, state, batches, mesh)
        jax.block_until_ready(m)
    print("devices", jax.device_count())
    print("full step ms", 1000 * timeit(full) / steps)

    donating = eqx.filter_jit(train_steps.__wrapped__ if hasattr(train_steps, "__wrapped__") else train_steps, donate="all-except-first")
    from jax.sharding import NamedSharding, PartitionSpec as P
    from vnca.vae import batch_elbo

    def zero_spec(x):
        if not eqx.is_inexact_array(x):
            return None
        for axis, size in enumerate(x.shape):
            if size % mesh.size == 0 and size >= mesh.size:
                return NamedSharding(mesh, P(*([None] * axis + ["data"])))
        return NamedSharding(mesh, P())

    def step_variant(state, batch, zero):
        key = jax.random.fold_in(jax.random.key(config.seed), state.step)
        elbo_key = jax.random.split(key, 4)[0]
        def loss(model):
            terms = batch_elbo(model, batch, elbo_key, steps=None)
            return -terms.elbo
        value, grads = eqx.filter_value_and_grad(loss)(state.model)
        params = eqx.filter(state.model, eqx.is_inexact_array)
        if zero:
            specs = jax.tree.map(zero_spec, params)
            grads = jax.lax.with_sharding_constraint(grads, specs)
            params_s = jax.lax.with_sharding_constraint(params, specs)
        else:
            params_s = params
        opt = optimiser(config.learning_rate, config.clip_norm)
        updates, opt_state = opt.update(grads, state.opt_state, params_s)
        new = eqx.apply_updates(params_s, updates)
        if zero:
            new = jax.lax.with_sharding_constraint(new, jax.tree.map(lambda x: None if x is None else NamedSharding(mesh, P()), new))
        model = eqx.combine(new, eqx.filter(state.model, eqx.is_inexact_array, inverse=True))
        return TrainState(model, opt_state, state.step + 1, None), value

    from functools import partial
    def make(zero, donate):
        @partial(eqx.filter_jit, donate="all" if donate else "none")
        def run(state, stacked):
            return jax.lax.scan(lambda s, b: step_variant(s, b, zero), state, stacked, unroll=True)
        return run

    for zero in (False, True):
        for donate in (False, True):
            st = place_state(init_state(config), mesh)
            if zero:
                specs = jax.tree.map(zero_spec, eqx.filter(st.model, eqx.is_inexact_array))
                opt_specs = optimiser().init(eqx.filter(st.model, eqx.is_inexact_array))
                # shard opt state leaves like params (mu, nu have same tree)
                def place(o):
                    return jax.tree.map(lambda x: jax.device_put(x, zero_spec(x) if x.ndim else NamedSharding(mesh, P())), o)
                st = TrainState(st.model, place(st.opt_state), st.step, None)
            run = make(zero, donate)
            holder = [st]
            def f():
                s, v = run(holder[0], batches if not donate else jax.device_put(batches, batches.sharding))
                holder[0] = s
                jax.block_until_ready(v)
            print(f"zero={zero} donate={donate}: ms/step", 1000 * timeit(f) / steps, flush=True)

    def grad_only():
        g = grad_fn(state.model, batches[0])
        jax.block_until_ready(g)
    @eqx.filter_jit
    def grad_fn(model, batch):
        return eqx.filter_grad(lambda m: -batch_elbo(m, batch, jax.random.key(0), steps=None).elbo)(model)
    print("grad only ms", 1000 * timeit(grad_only))

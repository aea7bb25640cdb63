"""Where the baseline's training step goes on a CPU (the laptop chapter's "Against PyTorch" section and
issue 11's notes). Experiments, not package code; run each on a quiet machine:

    python benchmarks/baseline_step.py                     # laptop recipe, every CPU device
    python benchmarks/baseline_step.py --scale full        # the paper's baseline
    python benchmarks/baseline_step.py --scale full --step-only   # the training step alone (two checkouts)
    JAX_NUM_CPU_DEVICES=1 python benchmarks/baseline_step.py --scale full   # one device
    python benchmarks/baseline_step.py --scale full --trace   # where a device's time goes (XLA's trace)
    python benchmarks/baseline_step.py --scale full --torch   # PyTorch's step, its halves, one conv
    JAX_NUM_CPU_DEVICES=1 python benchmarks/baseline_step.py --batch 16   # the ELBO's gradient alone

Default: ms per step of `train_steps` (10 fused) on the mesh of every device, and, in the same
process and interleaved with it, of the same steps with no mesh at all (on the first device);
then of variants with the optimiser update sharded over the devices (ZeRO-1 style) and/or the
state donated, and of the gradient alone. `--trace`: XLA's profiler trace of three calls on the
mesh; for each thread that ran the program's operations, the time per step of the largest ones,
and how much of the time one, both or neither of the two busiest threads were at work.
"""
import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

sys.path.insert(0, os.path.dirname(__file__))
STEPS = 10  # per compiled call, as the laptop recipe


def timeit(f, n=5):
    f(); f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def elbo_only(config, batch_size):
    import jax, jax.numpy as jnp, equinox as eqx
    from vnca.step import init_state
    from vnca.vae import batch_elbo
    model = init_state(config).model
    x = (jax.random.uniform(jax.random.key(0), (batch_size, 32, 32)) < 0.13).astype(jnp.float32)
    g = eqx.filter_jit(lambda m, x: eqx.filter_grad(lambda m: -batch_elbo(m, x, jax.random.key(0), steps=None).elbo)(m))
    f = eqx.filter_jit(lambda m, x: batch_elbo(m, x, jax.random.key(0), steps=None).elbo)
    print(jax.device_count(), "device(s), batch", batch_size,
          "ELBO ms: forward %.1f, gradient %.1f" % (1000 * timeit(lambda: jax.block_until_ready(f(model, x)), 9),
                                                      1000 * timeit(lambda: jax.block_until_ready(g(model, x)), 9)))


def torch_step(config):
    import torch
    from torch_models import Trainer, kl, log_likelihood
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    trainer = Trainer("baseline", config)
    model = trainer.model
    x = (torch.rand(config.batch_size, 32, 32) < 0.13).float()

    def gradient():
        trainer.optimiser.zero_grad(set_to_none=True)
        mean, log_scale = model.encoder(x[:, None])
        z = mean + torch.exp(log_scale) * torch.randn(mean.shape)
        (-(log_likelihood(model.decode(z), x) - kl(mean, log_scale)).mean()).backward()

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        trainer.optimiser.step()

    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads: ms per step %.1f; "
          "forward and backward %.1f; clipping and Adam %.1f"
          % tuple(1000 * timeit(f, 20) for f in (lambda: trainer.step(x), gradient, update)))
    # one convolution of the paper's encoder (64 -> 128 channels, 16x16 cells, stride 2), forward and
    # backward, on one thread and on all: does PyTorch split a single convolution over the cores?
    cells = torch.randn(32, 64, 16, 16, requires_grad=True)
    weight = torch.randn(128, 64, 5, 5, requires_grad=True)
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        ms = 1000 * timeit(lambda: torch.nn.functional.conv2d(cells, weight, stride=2, padding=2).sum().backward(), 20)
        print(f"one convolution, forward and backward, {n} thread(s): {ms:.1f} ms")
    torch.set_num_threads(threads)


def trace(config, state, batches, mesh):
    import jax
    from vnca.step import train_steps
    holder = [state]

    def call():
        holder[0], m = train_steps(config, holder[0], batches, mesh)
        jax.block_until_ready(m)
    for _ in range(2):
        call()
    folder = tempfile.mkdtemp(prefix="vnca-trace-")
    jax.profiler.start_trace(folder)
    for _ in range(3):
        call()
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True))[-1]
    events = [e for e in json.load(gzip.open(path))["traceEvents"] if e.get("ph") == "X"]
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["tid"]].append(e)
    # the threads that ran the program's operations (its fusions), busiest first
    workers = sorted((t for t, es in by_thread.items() if any("fusion" in e["name"] for e in es)),
                     key=lambda t: -sum(e["dur"] for e in by_thread[t]))
    steps = 3 * STEPS
    for t in workers:
        totals, counts = collections.defaultdict(float), collections.Counter()
        for e in by_thread[t]:
            if e["name"].startswith(("ThunkExecutor", "ThreadpoolListener", "end:")):
                continue
            name = re.sub(r"[._]\d+$", "", e["name"])
            totals[name] += e["dur"]; counts[name] += 1
        print(f"thread {t}: {sum(totals.values()) / 1000 / steps:.1f} ms per step in operations")
        for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {name:<36}{us / 1000 / steps:8.2f} ms per step ({counts[name] / steps:.0f} per step)")

    def intervals(es):
        merged = []
        for e in sorted(es, key=lambda e: e["ts"]):
            if e["name"].startswith(("ThunkExecutor", "ThreadpoolListener", "end:")):
                continue
            start, end = e["ts"], e["ts"] + e["dur"]
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return merged
    two = [intervals(by_thread[t]) for t in workers[:2]]
    first = min(iv[0][0] for iv in two); last = max(iv[-1][1] for iv in two)
    busy = np.zeros(int(last - first) + 1, np.int8)
    for ivs in two:
        for start, end in ivs:
            busy[int(start - first):int(end - first)] += 1
    span = len(busy) / 1000
    print(f"of {span:.0f} ms ({span / steps:.1f} per step): both threads at work "
          f"{100 * (busy == 2).mean():.0f}%, one {100 * (busy == 1).mean():.0f}%, "
          f"neither {100 * (busy == 0).mean():.0f}%")


def variants(config, state, batches, mesh):
    """The step with Adam's update split over the devices (ZeRO-1) and/or the state donated."""
    from functools import partial
    import jax, equinox as eqx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from vnca.step import TrainState, init_state, optimiser, place_state
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
        value, grads = eqx.filter_value_and_grad(
            lambda m: -batch_elbo(m, batch, jax.random.split(key, 4)[0], steps=None).elbo)(state.model)
        params = eqx.filter(state.model, eqx.is_inexact_array)
        if zero:
            specs = jax.tree.map(zero_spec, params)
            grads = jax.lax.with_sharding_constraint(grads, specs)
            params = jax.lax.with_sharding_constraint(params, specs)
        updates, opt_state = optimiser(config.learning_rate, config.clip_norm).update(
            grads, state.opt_state, params)
        new = eqx.apply_updates(params, updates)
        if zero:
            new = jax.lax.with_sharding_constraint(
                new, jax.tree.map(lambda x: None if x is None else NamedSharding(mesh, P()), new))
        model = eqx.combine(new, eqx.filter(state.model, eqx.is_inexact_array, inverse=True))
        return TrainState(model, opt_state, state.step + 1, None), value

    for zero in (False, True):
        for donate in (False, True):
            st = place_state(init_state(config), mesh)
            if zero:
                st = TrainState(st.model, jax.tree.map(
                    lambda x: jax.device_put(x, zero_spec(x) if x.ndim else NamedSharding(mesh, P())),
                    st.opt_state), st.step, None)
            run = partial(eqx.filter_jit, donate="all" if donate else "none")(
                lambda s, stacked: jax.lax.scan(lambda s, b: step_variant(s, b, zero), s, stacked, unroll=True))
            holder = [st]

            def f():
                s, v = run(holder[0], jax.device_put(batches, batches.sharding) if donate else batches)
                holder[0] = s
                jax.block_until_ready(v)
            print(f"  ZeRO-1 {zero}, donated {donate}: ms per step %.1f" % (1000 * timeit(f) / STEPS), flush=True)

    grad = eqx.filter_jit(lambda m, b: eqx.filter_grad(
        lambda m: -batch_elbo(m, b, jax.random.key(0), steps=None).elbo)(m))
    print("  the gradient alone: ms %.1f" % (1000 * timeit(lambda: jax.block_until_ready(grad(state.model, batches[0])))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("laptop", "full"), default="laptop")
    parser.add_argument("--batch", type=int, help="time the ELBO's forward pass and gradient alone")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--step-only", action="store_true", help="only the first line: mesh against no mesh")
    args = parser.parse_args()
    from vnca.recipes import train_config
    config = train_config("baseline", args.scale)
    if args.batch:
        return elbo_only(config, args.batch)
    if args.torch:
        return torch_step(config)
    import jax, jax.numpy as jnp
    from inputs import images
    from vnca.mesh import data_mesh, shard_batches
    from vnca.step import init_state, place_state, train_steps
    config = dataclasses.replace(config, steps_per_call=STEPS, log_every=STEPS, checkpoint_every=STEPS)
    mesh = data_mesh()
    stacked = images(STEPS * config.batch_size).reshape(STEPS, config.batch_size, 32, 32)
    state, batches = place_state(init_state(config), mesh), shard_batches(stacked, mesh)
    print(f"baseline, {args.scale} scale, {jax.device_count()} CPU device(s), JAX {jax.__version__}")
    if args.trace:
        return trace(config, state, batches, mesh)
    runs = {f"mesh of {mesh.size}": [state, batches, mesh], "no mesh": [init_state(config), jnp.asarray(stacked), None]}
    times = {name: [] for name in runs}
    for turn in range(8):  # interleaved; the first two turns compile and warm up
        for name, run in runs.items():
            start = time.perf_counter()
            run[0], metrics = train_steps(config, run[0], run[1], run[2])
            jax.block_until_ready(metrics)
            if turn >= 2:
                times[name].append(time.perf_counter() - start)
    print("ms per step: " + ", ".join(f"{name} %.1f" % (1000 * np.median(t) / STEPS) for name, t in times.items()))
    if not args.step_only:
        variants(config, runs[f"mesh of {mesh.size}"][0], batches, mesh)


if __name__ == "__main__":
    main()

"""Training speed of the three models on whatever backend JAX finds: steps/s, samples/s, FLOP/s.

    python benchmarks/train.py                        # the paper's configurations and batch sizes
    python benchmarks/train.py --models doubling --calls 3 --steps-per-call 2 --json out.json

Each measurement runs `vnca.train.train_steps` (the compiled multi-step update that `fit` calls) on
a mesh of all local devices, once to compile and then `--calls` times; the median call gives steps/s.
Achieved FLOP/s counts the forward and backward pass (XLA's cost analysis of the ELBO's gradient,
on unrolled NCA scans; the Adam update adds little); the non-doubling model is counted at its mean
training length, T = 48, and trains with its pool of 1,024 states as in `fit`.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from models import compiled, flops, header, make  # benchmarks/models.py
from vnca.mesh import data_mesh, shard_batches
from vnca.recipes import train_config
from vnca.step import init_state, place_state, train_steps

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)


def benchmark(name: str, calls: int, steps_per_call: int, batch: int | None) -> dict:
    overrides = {"steps_per_call": steps_per_call, "log_every": steps_per_call,
                 "checkpoint_every": steps_per_call}
    if batch:
        overrides["batch_size"] = batch
    config = train_config(name, "full", **overrides)
    mesh = data_mesh()
    state = place_state(init_state(config), mesh)
    rng = np.random.default_rng(0)
    stacked = shard_batches((rng.random((steps_per_call, config.batch_size, 32, 32)) < 0.1).astype(np.float32), mesh)
    start = time.perf_counter()
    state, metrics = train_steps(config, state, stacked, mesh)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        state, metrics = train_steps(config, state, stacked, mesh)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    per_call = statistics.median(times)
    steps_per_s = steps_per_call / per_call
    model, steps = make(name, remat=False, unroll=True)
    if name == "nondoubling":
        steps = 48  # the mean of T ~ uniform{32..64}
    x = jnp.zeros((config.batch_size, 32, 32))
    _, _, grad = compiled(model, steps, x, jax.random.key(0))
    step_flops = flops(grad)
    return {"model": name, "batch": config.batch_size, "devices": mesh.size, "steps_per_call": steps_per_call,
            "first_call_s": first, "steps_per_s": steps_per_s, "samples_per_s": steps_per_s * config.batch_size,
            "gflop_per_step": step_flops / 1e9, "achieved_tflop_per_s": step_flops * steps_per_s / 1e12}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=["baseline", "doubling", "nondoubling"],
                        default=["baseline", "doubling", "nondoubling"])
    parser.add_argument("--calls", type=int, default=3, help="timed calls after the first")
    parser.add_argument("--steps-per-call", type=int, default=5)
    parser.add_argument("--batch", type=int, help="default: the paper's batch size for each model")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    for name in ("calls", "steps_per_call", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    env = header()
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{'model':<12}{'batch':>6}{'devices':>8}{'steps/s':>10}{'samples/s':>11}{'GFLOP/step':>12}"
          f"{'TFLOP/s':>9}")
    results = []
    for name in args.models:
        r = benchmark(name, args.calls, args.steps_per_call, args.batch)
        results.append(r)
        print(f"{name:<12}{r['batch']:>6}{r['devices']:>8}{r['steps_per_s']:>10.3f}{r['samples_per_s']:>11.2f}"
              f"{r['gflop_per_step']:>12.1f}{r['achieved_tflop_per_s']:>9.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

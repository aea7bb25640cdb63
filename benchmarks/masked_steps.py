"""How to skip NCA steps past a traced count in unrolled code: the cost of each way, on a CPU.

    python benchmarks/masked_steps.py [--json out.json]

The non-doubling decoder trains with a number of steps T drawn per batch, so its compiled step
holds `max_steps` NCA steps and must leave the state alone after the first T. Timed here: the
gradient of 40 unrolled steps of a laptop-scale non-doubling rule (32 channels, batch 8, 32x32) at
T = 34, with the steps past T made inert by

- `where`:    state = where(t < T, step(state), state)      (vnca before 2026-11-28)
- `multiply`: state = state + (t < T) * f(state)            (vnca's `run` now)
- `cond`:     state = lax.cond(t < T, step, identity, state)

against 40 and 34 plain steps (the latter: what exactly T steps cost).
"""

import argparse
import json
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from models import header  # benchmarks/models.py
from vnca.nca import UpdateRule, step

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

LENGTH, T, BATCH = 40, 34, 8


def unrolled(rule, state, steps, mode):
    for t in range(LENGTH):
        if mode == "where":
            state = jnp.where(t < steps, step(rule, state), state)
        elif mode == "multiply":
            state = step(rule, state, active=t < steps)
        elif mode == "cond":
            state = jax.lax.cond(t < steps, lambda s: step(rule, s), lambda s: s, state)
        elif mode == "40 plain steps" or t < T:
            state = step(rule, state)
    return state


def measure(mode: str, calls: int) -> dict:
    rule = UpdateRule(32, 32, 0, True, key=jax.random.key(0))
    rule = eqx.tree_at(lambda r: r.output.weight, rule, 0.05 * jax.random.normal(jax.random.key(2), (32, 32)))
    x = jax.random.normal(jax.random.key(1), (BATCH, 32, 32, 32))
    loss = lambda r, n: jnp.sum(jax.vmap(lambda s: unrolled(r, s, n, mode))(x) ** 2)
    grad = eqx.filter_jit(eqx.filter_grad(loss))
    start = time.perf_counter()
    jax.block_until_ready(grad(rule, jnp.int32(T)))
    first = time.perf_counter() - start
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(grad(rule, jnp.int32(T)))
        times.append(time.perf_counter() - start)
    return {"mode": mode, "first_call_s": first, "median_s": statistics.median(times)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    env = header()
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    results = []
    for mode in ("where", "multiply", "cond", "40 plain steps", "34 plain steps"):
        r = measure(mode, args.calls)
        results.append(r)
        print(f"{mode:<16}{r['median_s']:>8.3f} s   (first call {r['first_call_s']:.1f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "length": LENGTH, "steps": T, "batch": BATCH, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

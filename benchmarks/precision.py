"""What an accelerator's reduced-precision float32 products would do to the test bound, emulated on a CPU.

    python benchmarks/precision.py                         # doubling-laptop, 256 test images, K = 128
    python benchmarks/precision.py --model nondoubling-laptop --images 64 --json out.json

A TPU computes a float32 matrix product or convolution by default in one pass of bfloat16 (8
significant bits), recent NVIDIA GPUs in TF32 (11). This script traces one image's K log-weights
(`vnca.vae.log_importance_weights`, as the evaluation computes them) to a jaxpr and
evaluates it again with the operands of every `dot_general` and `conv_general_dilated` rounded to
nearest (ties to even) at that many significant bits, the products then summed in float32, as those
units do. The same samples are drawn for every precision, so the differences are paired: they show
what the precision alone moves. Written for the evaluation chapter's "in full float32" paragraph.
"""

import argparse
import json
import math
import platform
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from vnca import pretrained
from vnca.data import load_binarized_mnist
from vnca.vae import log_importance_weights

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

PRECISIONS = {"float32": None, "tf32": 11, "bfloat16": 8}  # significant bits, the leading one included


def round_to(x, bits):
    """x rounded to `bits` significant bits, to nearest with ties to even (float32 kept)."""
    if bits is None or x.dtype != jnp.float32:
        return x
    drop = 24 - bits
    u = jax.lax.bitcast_convert_type(x, jnp.uint32)
    u = u + (jnp.uint32(1 << (drop - 1)) - 1) + ((u >> drop) & 1)
    return jax.lax.bitcast_convert_type(u & jnp.uint32(~((1 << drop) - 1) & 0xFFFFFFFF), jnp.float32)


ROUNDED = {"dot_general", "conv_general_dilated"}
CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
         "custom_vjp_call": "call_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr"}


def evaluate(jaxpr, consts, args, bits):
    """Run `jaxpr`, rounding the operands of every product to `bits`; calls are entered, loops refused."""
    env = {}

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in CALLS:
            inner = eqn.params[CALLS[name]]
            closed = inner if hasattr(inner, "consts") else core.ClosedJaxpr(inner, ())
            outputs = evaluate(closed.jaxpr, closed.consts, inputs, bits)
        elif name == "scan":  # the NCA's steps: the same scan, its body evaluated here
            p, body = eqn.params, eqn.params["jaxpr"]
            fixed, carry, xs = (inputs[:p["num_consts"]], inputs[p["num_consts"]:p["num_consts"] + p["num_carry"]],
                                inputs[p["num_consts"] + p["num_carry"]:])

            def step(carry, x, fixed=fixed, body=body, n=p["num_carry"]):
                out = evaluate(body.jaxpr, body.consts, [*fixed, *carry, *x], bits)
                return out[:n], out[n:]

            carry, ys = jax.lax.scan(step, carry, xs, length=p["length"], reverse=p["reverse"], unroll=p["unroll"])
            outputs = [*carry, *ys]
        else:
            if any(isinstance(p, (core.Jaxpr, core.ClosedJaxpr)) for p in eqn.params.values()):
                raise NotImplementedError(f"{name}: a loop or branch this script does not enter")
            if name in ROUNDED:
                inputs = [round_to(x, bits) for x in inputs]
            outputs = eqn.primitive.bind(*inputs, **eqn.params)
            if not eqn.primitive.multiple_results:
                outputs = [outputs]
        for v, x in zip(eqn.outvars, outputs):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="doubling-laptop")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    model = pretrained.load(args.model)
    test = load_binarized_mnist().test
    rows = np.sort(np.random.default_rng(0).choice(len(test), args.images, replace=False))
    closed = jax.make_jaxpr(lambda m, x, k: log_importance_weights(m, x, k, args.samples))(model, test[0],
                                                                                        jax.random.key(0))
    leaves = jax.tree.leaves(model)
    bounds = {}
    for name, bits in PRECISIONS.items():
        run = jax.jit(lambda leaves, x, k, bits=bits: jax.scipy.special.logsumexp(
            evaluate(closed.jaxpr, closed.consts, [*leaves, x, k], bits)[0]) - math.log(args.samples))
        start = time.perf_counter()
        bounds[name] = np.array([float(run(leaves, jnp.asarray(test[i]), jax.random.fold_in(jax.random.key(0), int(i))))
                                 for i in rows])
        print(f"{name}: mean bound {bounds[name].mean():.3f} nats ({time.perf_counter() - start:.0f} s)", flush=True)
    result = {"model": args.model, "images": args.images, "samples": args.samples, "rows_seed": 0,
              "mean_bound_float32": float(bounds["float32"].mean()),
              "standard_error_float32": float(bounds["float32"].std(ddof=1) / math.sqrt(args.images))}
    for name in ("tf32", "bfloat16"):
        diff = bounds[name] - bounds["float32"]
        result[name] = {"mean_shift": float(diff.mean()), "shift_standard_error": float(diff.std(ddof=1) / math.sqrt(args.images)),
                        "largest_shift": float(diff[np.argmax(np.abs(diff))]), "mean_absolute_shift": float(np.abs(diff).mean())}
        print(f"{name}: mean shift {diff.mean():+.4f} ± {result[name]['shift_standard_error']:.4f} nats, "
              f"largest {result[name]['largest_shift']:+.3f}, mean |shift| {np.abs(diff).mean():.4f}")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        result["environment"] = {"jax": jax.__version__, "backend": jax.default_backend(), "machine": platform.machine(),
                                 "commit": commit}
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

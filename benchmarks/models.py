"""Speed of the three models on whatever backend JAX finds: forward, forward + backward, FLOPs.

    python benchmarks/models.py                      # the paper's batch sizes, every model
    python benchmarks/models.py --models doubling --batch 8 --repeats 5 --json out.json

Forward is the batch ELBO (encode, sample, decode, likelihood, KL); forward + backward is its
gradient with respect to every parameter. The non-doubling model runs its test-time T = 36 steps
(training draws T from 32..64, 48 on average). FLOPs per sample come from XLA's cost analysis of the
compiled functions. Times are the median of `--repeats` runs after one warm-up run (compilation is
reported separately, as the first call).
"""

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from vnca.baseline import baseline
from vnca.doubling import DoublingConfig, doubling_vnca
from vnca.nondoubling import NonDoublingConfig, nondoubling_vnca
from vnca.vae import batch_elbo, parameter_count

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

PAPER_BATCH = {"baseline": 32, "doubling": 32, "nondoubling": 128}


def make(name: str, remat: bool, unroll: bool | None = None):
    key = jax.random.key(0)
    if name == "baseline":
        return baseline(key=key), None
    if name == "doubling":
        return doubling_vnca(DoublingConfig(remat=remat, unroll=unroll), key=key), None
    config = NonDoublingConfig(remat=remat, unroll=unroll)
    return nondoubling_vnca(config, key=key), config.test_steps  # T = 36, as at test time


def flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per device
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def timed(fn, *args, repeats: int):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def compiled(model, steps, x, key):
    """The forward and the forward + backward functions of `model`, compiled for these inputs."""
    params, static = eqx.partition(model, eqx.is_array)

    def loss(params, x, key):
        return -batch_elbo(eqx.combine(params, static), x, key, steps=steps).elbo

    args = (params, x, key)
    return params, jax.jit(loss).lower(*args).compile(), jax.jit(jax.value_and_grad(loss)).lower(*args).compile()


def benchmark(name: str, batch: int, repeats: int, remat: bool) -> dict:
    x = jnp.asarray(np.random.default_rng(0).random((batch, 32, 32)) < 0.1, jnp.float32)
    key = jax.random.key(1)
    model, steps = make(name, remat)
    params, fwd_compiled, bwd_compiled = compiled(model, steps, x, key)
    fwd_first, fwd = timed(fwd_compiled, params, x, key, repeats=repeats)
    bwd_first, bwd = timed(bwd_compiled, params, x, key, repeats=repeats)
    # XLA counts a loop's body once, whatever its trip count: count FLOPs on unrolled NCA scans.
    _, fwd_unrolled, bwd_unrolled = compiled(make(name, remat, unroll=True)[0], steps, x, key)
    fwd_flops, bwd_flops = flops(fwd_unrolled) / batch, flops(bwd_unrolled) / batch
    return {
        "model": name, "batch": batch, "parameters": parameter_count(model), "remat": remat,
        "forward_s": fwd, "forward_backward_s": bwd,
        "first_call_s": {"forward": fwd_first, "forward_backward": bwd_first},
        "forward_gflop_per_sample": fwd_flops / 1e9, "forward_backward_gflop_per_sample": bwd_flops / 1e9,
        "forward_tflop_per_s": fwd_flops * batch / fwd / 1e12,
        "forward_backward_tflop_per_s": bwd_flops * batch / bwd / 1e12,
    }


def header() -> dict:
    """Where a measurement was taken: backend, device, versions, commit."""
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
            "devices": jax.device_count(), "jax": jax.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "commit": _commit()}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(PAPER_BATCH), default=list(PAPER_BATCH))
    parser.add_argument("--batch", type=int, help="batch size (default: the paper's, per model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--remat", action="store_true", help="rematerialise each NCA step")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        parser.error("--batch must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    env = header()
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{'model':<12}{'batch':>6}{'forward':>11}{'fwd+bwd':>11}{'GFLOP/sample fwd':>18}"
          f"{'fwd+bwd':>10}{'TFLOP/s fwd':>13}{'fwd+bwd':>10}")
    results = []
    for name in args.models:
        r = benchmark(name, args.batch or PAPER_BATCH[name], args.repeats, args.remat)
        results.append(r)
        print(f"{name:<12}{r['batch']:>6}{r['forward_s']:>10.3f}s{r['forward_backward_s']:>10.3f}s"
              f"{r['forward_gflop_per_sample']:>18.2f}{r['forward_backward_gflop_per_sample']:>10.2f}"
              f"{r['forward_tflop_per_s']:>13.3f}{r['forward_backward_tflop_per_s']:>10.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

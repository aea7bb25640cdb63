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


def benchmark(name: str, batch: int, repeats: int, remat: bool) -> dict:
    model, steps = make(name, remat)
    x = jnp.asarray(np.random.default_rng(0).random((batch, 32, 32)) < 0.1, jnp.float32)
    key = jax.random.key(1)

    params, static = eqx.partition(model, eqx.is_array)

    def loss(params, x, key):
        return -batch_elbo(eqx.combine(params, static), x, key, steps=steps).elbo

    forward = jax.jit(loss)
    backward = jax.jit(jax.value_and_grad(loss))
    fwd_compiled = forward.lower(params, x, key).compile()
    bwd_compiled = backward.lower(params, x, key).compile()
    fwd_first, fwd = timed(fwd_compiled, params, x, key, repeats=repeats)
    bwd_first, bwd = timed(bwd_compiled, params, x, key, repeats=repeats)
    fwd_flops, bwd_flops = flops(fwd_compiled) / batch, flops(bwd_compiled) / batch
    return {
        "model": name, "batch": batch, "parameters": parameter_count(model), "remat": remat,
        "forward_s": fwd, "forward_backward_s": bwd,
        "first_call_s": {"forward": fwd_first, "forward_backward": bwd_first},
        "forward_gflop_per_sample": fwd_flops / 1e9, "forward_backward_gflop_per_sample": bwd_flops / 1e9,
        "forward_tflop_per_s": fwd_flops * batch / fwd / 1e12,
        "forward_backward_tflop_per_s": bwd_flops * batch / bwd / 1e12,
    }


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

    device = jax.devices()[0]
    header = {"backend": jax.default_backend(), "device": device.device_kind, "devices": jax.device_count(),
              "jax": jax.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "commit": _commit()}
    print(" ".join(f"{k}={v}" for k, v in header.items()))
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
            json.dump({"environment": header, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

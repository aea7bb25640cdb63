"""Evaluation speed: test images per second for the importance-weighted bound, on whatever backend JAX finds.

    python benchmarks/evaluate.py                              # the paper's models, K = 128
    python benchmarks/evaluate.py --models doubling --images 64 --json out.json

Each measurement runs `vnca.evaluate.image_bounds` (what `vnca evaluate` runs) for freshly
initialised full-size models on real test images, over a mesh of all local devices: once to
compile, then timed. The reproduction reported 1.45 s (baseline), 162 s (doubling) and 75 s
(non-doubling) for the whole test set on a TPU v3-8.
"""

import argparse
import json
import time

import jax
import numpy as np

from models import header, make  # benchmarks/models.py
from vnca.data import load_binarized_mnist
from vnca.evaluate import image_bounds

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)


def benchmark(name: str, images: np.ndarray, samples: int, chunk: int, batch: int | None) -> dict:
    model, _ = make(name, remat=False)
    key = jax.random.key(0)
    start = time.perf_counter()
    image_bounds(model, images[: batch or len(images)], key, samples=samples, chunk=chunk, batch_size=batch)
    first = time.perf_counter() - start
    start = time.perf_counter()
    image_bounds(model, images, key, samples=samples, chunk=chunk, batch_size=batch)
    seconds = time.perf_counter() - start
    return {"model": name, "samples": samples, "chunk": chunk, "images": len(images), "devices": jax.device_count(),
            "first_call_s": first, "seconds": seconds, "images_per_s": len(images) / seconds,
            "test_set_s": 10_000 * seconds / len(images)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=["baseline", "doubling", "nondoubling"],
                        default=["baseline", "doubling", "nondoubling"])
    parser.add_argument("--images", type=int, default=8, help="test images timed per model")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--batch", type=int, help="images per batch (default 8 per device)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    for name in ("images", "samples", "chunk", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    rows = np.random.default_rng(0).choice(10_000, args.images, replace=False)
    images = load_binarized_mnist().test[rows]
    env = header()
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{'model':<12}{'K':>5}{'images':>8}{'devices':>8}{'images/s':>10}{'test set (s)':>14}")
    results = []
    for name in args.models:
        r = benchmark(name, images, args.samples, args.chunk, args.batch)
        results.append(r)
        print(f"{name:<12}{r['samples']:>5}{r['images']:>8}{r['devices']:>8}{r['images_per_s']:>10.3f}"
              f"{r['test_set_s']:>14.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

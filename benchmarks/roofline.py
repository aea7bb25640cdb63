"""How far a laptop model's test-set bound is from what this CPU can compute at all: the bound's
floating-point operations per image, the machine's float32 throughput, and the images per second
measured.

    python benchmarks/roofline.py                          # the three shipped laptop models
    python benchmarks/roofline.py --models nondoubling-laptop --images 32

Each model: `vnca.evaluate.image_bounds` (what `vnca evaluate` runs: K = 128, default batch and
devices) on test images 8.. after a warm-up on images 0..8; its operations per image are XLA's
count (`cost_analysis`) for one image's 128 samples compiled as one batch, not chunked (XLA counts
a loop's body once). Throughput, all devices at once, best of five: a 1024x1024 float32 matrix
product, and the 3x3 convolution that perceives in an NCA step (32 channels in and out, 32x32
grids, 64 a device). The lower bound on the time of 10,000 images is their
operations over the larger of the two throughputs. Run it on a quiet machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from vnca.devices import use_cpu_cores, use_huge_pages

use_huge_pages()  # as the `vnca` command does: started again with glibc's huge pages, before JAX
use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from vnca import pretrained  # noqa: E402
from vnca.data import load_binarized_mnist  # noqa: E402
from vnca.evaluate import image_bounds  # noqa: E402
from vnca.mesh import data_mesh  # noqa: E402
from vnca.vae import importance_weighted_bound  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def best_of(f, *args, repeats: int = 5) -> float:
    jax.block_until_ready(f(*args))  # compiled and warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def throughput() -> dict:
    """Float32 operations per second, all devices at once: a matrix product and the NCA's 3x3
    convolution (32 channels in and out on 32x32 grids, 64 grids a device)."""
    mesh = data_mesh()
    shard = NamedSharding(mesh, PartitionSpec("data"))
    n, d = 1024, mesh.size
    a = jax.device_put(jax.random.normal(jax.random.key(0), (d, n, n)), shard)
    matmul = jax.jit(lambda a: jnp.einsum("dij,djk->dik", a, a, precision="highest"))
    matmul_s = best_of(matmul, a)
    grids = jax.device_put(jax.random.normal(jax.random.key(1), (64 * d, 32, 32, 32)), shard)
    kernel = jax.random.normal(jax.random.key(2), (3, 3, 32, 32)) / 17

    def conv(x):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision="highest")

    conv_s = best_of(jax.jit(conv), grids)
    return {"matmul_gflops": 2 * d * n**3 / matmul_s / 1e9,
            "conv3x3_gflops": 2 * 64 * d * 32 * 32 * 9 * 32 * 32 / conv_s / 1e9}


def bound_row(name: str, images: np.ndarray, peak_gflops: float) -> dict:
    model = pretrained.load(name)
    key = jax.random.key(0)
    image_bounds(model, images[:8], key)  # compiles the batch's program
    start = time.perf_counter()
    image_bounds(model, images[8:], key, indices=np.arange(8, len(images)))
    seconds = time.perf_counter() - start
    per_s = (len(images) - 8) / seconds
    # XLA's count of one image's bound with its 128 samples in one chunk: a loop's body is
    # counted once, so the chunked program that image_bounds runs would be undercounted
    one = jax.jit(lambda x: importance_weighted_bound(model, x, key, 128, 128))
    cost = one.lower(jnp.asarray(images[0], jnp.float32)).compile().cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    least = 10_000 * flops / (peak_gflops * 1e9)
    return {"model": name, "images": len(images) - 8, "images_per_s": per_s,
            "test_set_s": 10_000 / per_s, "gflop_per_image": flops / 1e9,
            "achieved_gflops": per_s * flops / 1e9, "least_test_set_s": least}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+",
                   default=["baseline-laptop", "doubling-laptop", "nondoubling-laptop"])
    p.add_argument("--images", type=int, default=40, help="test images, the first 8 to compile")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "roofline-cpu-2core.json")
    a = p.parse_args(argv)
    if a.images < 16:
        p.error("--images must be at least 16 (8 to compile, 8 or more timed)")
    peak = throughput()
    print(f"float32, all {jax.device_count()} devices: matrix product {peak['matmul_gflops']:.0f} GFLOP/s, "
          f"3x3 convolution {peak['conv3x3_gflops']:.0f} GFLOP/s", flush=True)
    best = max(peak.values())
    images = load_binarized_mnist().test[: a.images]
    rows = []
    for name in a.models:
        r = bound_row(name, images, best)
        rows.append(r)
        print(f"{name:<20} {r['images_per_s']:7.2f} images/s  10,000 in {r['test_set_s'] / 60:5.1f} min  "
              f"{r['gflop_per_image']:7.1f} GFLOP an image  {r['achieved_gflops']:5.0f} GFLOP/s  "
              f"no faster than {r['least_test_set_s'] / 60:5.1f} min at {best:.0f} GFLOP/s", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    record = {"command": "python benchmarks/roofline.py " + " ".join(argv or sys.argv[1:]),
              "throughput": peak, "rows": rows, "devices": jax.device_count(), "cpus": os.cpu_count(),
              "machine": platform.machine(), "jax": jax.__version__, "commit": commit,
              "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "when": time.strftime("%Y-%m-%d")}
    from vnca.files import atomic_write

    atomic_write(a.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

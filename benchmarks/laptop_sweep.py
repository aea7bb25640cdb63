"""The sweep behind the laptop recipes: seconds per training step, then a short equal-time run.

    python benchmarks/laptop_sweep.py time   --json benchmarks/results/laptop-time.json
    python benchmarks/laptop_sweep.py train  --minutes 4 --json benchmarks/results/laptop-train.json

`time` measures the compiled training step (`train_steps`, as `fit` calls it) of every candidate;
`train` trains each doubling candidate for the same wall time and reports its single-sample ELBO on
held-out test images, so that width is traded against steps at a fixed budget.
"""

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from vnca.baseline import BaselineConfig
from vnca.data import batches, load_binarized_mnist
from vnca.doubling import DoublingConfig
from vnca.mesh import data_mesh, shard_batches
from vnca.nondoubling import NonDoublingConfig
from vnca.recipes import TrainConfig
from vnca.step import init_state, place_state, train_steps
from vnca.train import fit
from vnca.vae import batch_elbo, parameter_count

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

CANDIDATES = {
    "doubling h32 enc32 b16": TrainConfig("doubling", DoublingConfig(32, 32, 1), batch_size=16),
    "doubling h32 enc16 b16": TrainConfig("doubling", DoublingConfig(32, 32, 1, encoder_width=16), batch_size=16),
    "doubling h32 enc8 b16": TrainConfig("doubling", DoublingConfig(32, 32, 1, encoder_width=8), batch_size=16),
    "doubling h48 enc16 b16": TrainConfig("doubling", DoublingConfig(48, 48, 1, encoder_width=16), batch_size=16),
    "doubling h24 enc16 b16": TrainConfig("doubling", DoublingConfig(24, 24, 1, encoder_width=16), batch_size=16),
    "baseline z32 w32 b32": TrainConfig("baseline", BaselineConfig(32), batch_size=32),
    "baseline z32 w8 b32": TrainConfig("baseline", BaselineConfig(32, 8, 8), batch_size=32),
    "baseline z32 w16 b32": TrainConfig("baseline", BaselineConfig(32, 16, 16), batch_size=32),
    "nondoubling h32 enc16 T16-32 b16": TrainConfig(
        "nondoubling", NonDoublingConfig(32, 32, min_steps=16, max_steps=32, test_steps=20, encoder_width=16),
        batch_size=16, pool_size=256),
    "nondoubling h24 enc16 T16-32 b16": TrainConfig(
        "nondoubling", NonDoublingConfig(24, 24, min_steps=16, max_steps=32, test_steps=20, encoder_width=16),
        batch_size=16, pool_size=256),
}


def seconds_per_step(config: TrainConfig, data, calls: int = 3) -> float:
    mesh = data_mesh()
    state = place_state(init_state(config), mesh)
    stream = batches(data.train, config.batch_size, jax.random.key(1))
    stack = lambda: shard_batches(np.stack([next(stream) for _ in range(config.steps_per_call)]), mesh)
    state, m = train_steps(config, state, stack(), mesh)  # compile
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(calls):
        state, m = train_steps(config, state, stack(), mesh)
        jax.block_until_ready(m)
    return (time.perf_counter() - start) / (calls * config.steps_per_call)


def held_out_elbo(model, data, images: int = 512) -> float:
    x = data.test[:images].astype(np.float32)
    elbo = jax.jit(lambda m, x, k: batch_elbo(m, x, k).elbo)
    return float(np.mean([elbo(model, x[i:i + 64], jax.random.key(i)) for i in range(0, images, 64)]))


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"machine": platform.processor() or platform.machine(), "cpus": jax.device_count(),
            "jax": jax.__version__, "python": platform.python_version(), "commit": commit}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["time", "train"])
    p.add_argument("--only", help="candidates whose name contains this")
    p.add_argument("--minutes", type=float, default=4.0, help="train: wall time per candidate")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    data = load_binarized_mnist()
    rows = []
    for name, config in CANDIDATES.items():
        if args.only and args.only not in name:
            continue
        if args.what == "train" and config.model != "doubling":
            continue
        config = dataclasses.replace(config, steps_per_call=5, log_every=5, checkpoint_every=10**6)
        per_step = seconds_per_step(config, data)
        row = {"name": name, "seconds_per_step": per_step,
               "parameters": parameter_count(init_state(config).model)}
        if args.what == "train":
            steps = max(5, int(args.minutes * 60 / per_step) // 5 * 5)
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                state = fit(dataclasses.replace(config, steps=steps), out, data=data, progress=False)
                row.update(steps=steps, seconds=time.perf_counter() - start,
                           test_elbo_512=held_out_elbo(state.model, data))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**machine(), "what": args.what, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The paper's non-doubling training step (batch 128, pool 1,024, T drawn in 32..64) on this CPU,
one side per process: together they do not fit in this machine's 23 GiB.

    python benchmarks/nondoubling_paper.py vnca --json benchmarks/results/nondoubling-paper-train-separate.json
    python benchmarks/nondoubling_paper.py pytorch --json benchmarks/results/nondoubling-paper-train-separate.json

Each side times training steps 0, 1, ... one at a time, with the T that vnca draws at each step (PyTorch
is given them). vnca runs as `fit` runs it, with `--steps-per-call 1`: on a CPU each step's decoder
scans only as far as its T needs (`scan_length`); the lengths are compiled first and timed apart.
`--full-scan` times vnca scanning all 64 steps whatever T, as it did before `scan_length`.
PyTorch's first step (it warms up) is repeated as step 0. Each side's record goes into the JSON file
beside the other's; peak memory is the process's maximum resident set size.
"""

import argparse
import json
import os
import resource
import time

from models import header  # benchmarks/models.py
from side_by_side import torch_train, vnca_steps, vnca_train
from vnca.files import atomic_write
from vnca.recipes import train_config
from vnca.step import scan_length

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=["vnca", "pytorch"])
    parser.add_argument("--steps", type=int, default=4, help="training steps timed")
    parser.add_argument("--json", help="also write the record into this file")
    parser.add_argument("--full-scan", action="store_true",
                        help="vnca: scan all 64 NCA steps whatever T (as before scan_length)")
    args = parser.parse_args(argv)
    config = train_config("nondoubling", "full")
    side = args.side + ("-full-scan" if args.full_scan else "")
    record = {"environment": header(), "steps": []}
    start = time.perf_counter()
    if args.side == "vnca":
        call = vnca_train(config, 1, args.steps, full_scan=args.full_scan)
        record["compile_s"] = time.perf_counter() - start
        print(f"vnca: compiled the scan lengths in {record['compile_s']:.1f} s", flush=True)
    else:
        import torch
        record["environment"].update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        call = torch_train("nondoubling", config, 1)
        call()  # warm-up, at step 0's T
        record["warm_up_s"] = time.perf_counter() - start
        call.trainer.count = 0  # time step 0 again, warm
    for step in range(args.steps):
        t = time.perf_counter()
        call()
        seconds = time.perf_counter() - t
        steps = vnca_steps(config, step)
        row = {"step": step, "T": steps, "s": seconds}
        if args.side == "vnca":
            row["scan_length"] = None if args.full_scan else scan_length(config, step, 1)
        record["steps"].append(row)
        print(row, flush=True)
    record["mean_s"] = sum(r["s"] for r in record["steps"]) / args.steps
    record["mean_T"] = sum(r["T"] for r in record["steps"]) / args.steps
    record["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{side}: {record['mean_s']:.1f} s per step (mean T {record['mean_T']:.1f}), "
          f"peak {record['peak_rss_gib']:.1f} GiB", flush=True)
    if args.json:
        results = {}
        if os.path.exists(args.json):
            with open(args.json) as f:
                results = json.load(f)
        results[side] = record
        atomic_write(args.json, json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    main()

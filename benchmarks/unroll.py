"""What unrolling costs and buys on a CPU: for each laptop model, the first call of training (compiling
included), the steady time per step and the peak resident memory, with the loops of a training call
unrolled or kept as loops.

    python benchmarks/unroll.py                                   # every model, every setting
    python benchmarks/unroll.py --models doubling --settings both nca-only

A call of training fuses `steps_per_call` steps in a scan over steps (`--steps-per-call`: 10, 2 and
1 by default; the laptop profile took 10 until this benchmark, and takes 1 since), and each NCA
decoder scans over its own steps. On a CPU both scans are unrolled (`train_steps`, `vnca.nca.run`).
The settings:

- `both`: both unrolled (what vnca does on a CPU);
- `nca-only`: the NCA steps unrolled, the call's training steps a loop;
- `steps-only`: the training steps unrolled, the NCA steps a loop;
- `neither`: both loops.

Each (model, setting) runs in a new process with no compilation cache, as a student's first
`vnca train` does: it builds the laptop recipe's state on the CPU's devices (`use_cpu_cores`), calls
the training steps once (compile and run: `first_call_s`), then `--calls` more times on the same
batch shapes (`seconds_per_step`, their median over calls), and reports its peak RSS and the minor
page faults of a call. Its environment is this one's: run it again under
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (what the `vnca` command sets) to see what huge pages
change. The baseline has no NCA, so only `both` and `nca-only` differ for it. `--profile smoke`:
the chapters' own small runs. Rows of earlier runs are kept, those measured again replaced. Run it
alone: it times wall clock.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"both": (True, True), "nca-only": (False, True), "steps-only": (True, False), "neither": (False, False)}


def child(model: str, setting: str, per_call: int, calls: int, profile: str = "laptop") -> dict:
    """One (model, setting), timed in this process."""
    from vnca.devices import use_cpu_cores

    use_cpu_cores()  # as the `vnca` command does
    import dataclasses
    import resource
    import statistics

    import jax
    import numpy as np

    import vnca.step
    from vnca.mesh import data_mesh, shard_batches
    from vnca.recipes import train_config
    from vnca.step import init_state, place_state, scan_length, train_steps_in_place

    steps_unrolled, nca_unrolled = SETTINGS[setting]
    if not steps_unrolled:  # the call's steps as a loop (train_steps' only scan)
        plain = vnca.step.scan
        vnca.step.scan = lambda body, carry, xs, unroll=False: plain(body, carry, xs, unroll=False)
    config = dataclasses.replace(train_config(model, profile), steps_per_call=per_call)
    if model != "baseline":
        config = dataclasses.replace(
            config, model_config=dataclasses.replace(config.model_config, unroll=nca_unrolled))
    mesh = data_mesh()
    n = config.steps_per_call
    rng = np.random.default_rng(0)
    batch = (rng.random((n, config.batch_size, 32, 32)) < 0.13).astype(np.float32)

    state = place_state(init_state(config), mesh)
    # the largest scan length any call draws, for every call: the same compiled program each time
    length = scan_length(config, 0, n)
    start = time.perf_counter()
    state, metrics = train_steps_in_place(shard_batches(batch, mesh), config, state, mesh, length)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        start = time.perf_counter()
        state, metrics = train_steps_in_place(shard_batches(batch, mesh), config, state, mesh, length)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / n)
    return {
        "model": model, "setting": setting, "steps_per_call": n, "scan_length": length,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "first_call_s": first, "seconds_per_step": statistics.median(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # started from a small parent
        # pages the kernel had to find and zero, per call: memory XLA freed and asked for again
        "minor_faults_per_call": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["baseline", "doubling", "nondoubling"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--steps-per-call", type=int, nargs="+", default=[10, 2, 1],
                   help="training steps fused into one compiled call (the laptop profile's: 10)")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "unroll-cpu-2core.json")
    p.add_argument("--profile", default="laptop", help="the recipes' profile (smoke: the chapters' own runs)")
    p.add_argument("--child", nargs=3, metavar=("MODEL", "SETTING", "STEPS_PER_CALL"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        model, setting, per_call = a.child
        print(json.dumps(child(model, setting, int(per_call), a.calls, a.profile)))
        return 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION", "VNCA_COMPILATION"))}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    rows = []
    for model in a.models:
        for setting, per_call in [(s, k) for s in a.settings for k in a.steps_per_call]:
            if model == "baseline" and not SETTINGS[setting][1]:
                continue  # no NCA: the same as its NCA-unrolled twin
            if per_call == 1 and not SETTINGS[setting][0]:
                continue  # a loop of one step is no loop (`vnca.nca.scan`)
            out = subprocess.run([sys.executable, __file__, "--child", model, setting, str(per_call),
                                  "--calls", str(a.calls), "--profile", a.profile],
                                 check=True, env=env, capture_output=True, text=True).stdout
            row = {"profile": a.profile, **json.loads(out.strip().splitlines()[-1]), "commit": commit}
            rows.append(row)
            print(f"{model:12} {setting:11} {per_call:2} steps/call   first call {row['first_call_s']:6.1f} s   "
                  f"{row['seconds_per_step'] * 1000:7.1f} ms/step   peak {row['peak_rss_mb']:6.0f} MB", flush=True)
    import jax

    # keep the rows of other runs of this script, replace those measured again
    key = lambda r: (r["profile"], r["model"], r["setting"], r["steps_per_call"], r.get("glibc_tunables", ""))  # noqa: E731
    kept = json.loads(a.json.read_text())["rows"] if a.json.exists() else []
    rows = [r for r in kept if key(r) not in {key(q) for q in rows}] + rows
    record = {"command": "python benchmarks/unroll.py", "rows": rows, "cpus": os.cpu_count(),
              "machine": platform.machine(), "jax": jax.__version__, "commit": commit,
              "when": time.strftime("%Y-%m-%d")}
    from vnca.files import atomic_write

    atomic_write(a.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

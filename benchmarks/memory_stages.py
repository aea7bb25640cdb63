"""Where a laptop training process's memory goes: its resident set (VmRSS) and its peak so far (VmHWM)
after each stage of `vnca train`'s start, with XLA's own account of the compiled training call.

    python benchmarks/memory_stages.py                 # the three laptop recipes, one process each
    python benchmarks/memory_stages.py --models doubling

Stages, in a new process per model with the environment the `vnca` command makes (one JAX device
per core, glibc's huge pages): Python started; JAX and vnca imported; JAX's CPU client up; the
training state built and placed on the devices; the training call compiled; its first call; ten
more calls. XLA's `memory_analysis()` of the compiled call gives the bytes of its arguments,
outputs and temporaries per device, and the size of its generated code. Memory, unlike time, needs
no quiet machine.
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


def status() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process, in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))


def child(model: str) -> dict:
    stages = [("python", *status())]
    from vnca.devices import use_cpu_cores

    use_cpu_cores()
    import jax
    import numpy as np

    from vnca.mesh import data_mesh, shard_batches
    from vnca.recipes import train_config
    from vnca.step import init_state, place_state, scan_length, train_steps_in_place

    stages.append(("imports", *status()))
    mesh = data_mesh()
    stages.append(("cpu client", *status()))
    config = train_config(model, "laptop")
    state = place_state(init_state(config), mesh)
    batch = (np.random.default_rng(0).random((config.steps_per_call, config.batch_size, 32, 32)) < 0.13)
    batches = shard_batches(batch.astype(np.float32), mesh)
    length = scan_length(config, 0, config.steps_per_call)
    stages.append(("state placed", *status()))
    compiled = train_steps_in_place.lower(batches, config, state, mesh, length).compile()
    stages.append(("compiled", *status()))
    state, metrics = train_steps_in_place(batches, config, state, mesh, length)
    jax.block_until_ready(metrics)
    stages.append(("first call", *status()))
    for _ in range(10):
        state, metrics = train_steps_in_place(batches, config, state, mesh, length)
    jax.block_until_ready(metrics)
    stages.append(("ten more calls", *status()))
    analysis = compiled.compiled.memory_analysis()  # equinox wraps JAX's Compiled
    state_mb = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes")) / 2**20
    xla = {k: getattr(analysis, k) / 2**20 for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                       "temp_size_in_bytes", "generated_code_size_in_bytes")}
    return {"model": model, "steps_per_call": config.steps_per_call, "devices": jax.device_count(),
            "stages": [{"stage": s, "rss_mb": r, "peak_mb": p} for s, r, p in stages],
            "training_state_mb": state_mb, "xla_call_mb": xla}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["baseline", "doubling", "nondoubling"])
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "memory-stages-cpu-2core.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child)))
        return 0
    from vnca.devices import huge_page_environment

    env = huge_page_environment() or dict(os.environ)
    rows = []
    for model in a.models:
        out = subprocess.run([sys.executable, __file__, "--child", model], check=True, env=env,
                             capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(model, "  ".join(f"{s['stage']} {s['rss_mb']:.0f}/{s['peak_mb']:.0f}" for s in row["stages"]))
        print("   XLA, per device (MB):", {k: round(v, 1) for k, v in row["xla_call_mb"].items()},
              f"training state {row['training_state_mb']:.1f} MB", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    import jax

    record = {"command": "python benchmarks/memory_stages.py", "rows": rows, "cpus": os.cpu_count(),
              "machine": platform.machine(), "jax": jax.__version__, "commit": commit,
              "glibc_tunables": env.get("GLIBC_TUNABLES", ""), "when": time.strftime("%Y-%m-%d")}
    from vnca.files import atomic_write

    atomic_write(a.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

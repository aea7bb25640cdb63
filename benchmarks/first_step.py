"""Time to the first step, as a student feels it: `vnca train --profile laptop --steps 10` (one compiled
call of ten steps, its metrics logged and checkpoint written), from the command to its end, in a new
process, first with an empty compilation cache and then again with the cache the first run filled.

    python benchmarks/first_step.py                       # the three laptop models
    python benchmarks/first_step.py --models doubling --json out.json

Each model gets a fresh cache folder ($VNCA_CACHE_DIR), so the first run compiles everything; the
second reads the programs the first wrote (vnca.devices.use_compilation_cache, asked for with
VNCA_COMPILATION_CACHE=1). Run it alone: it times wall clock.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parent.parent
VNCA = str(Path(sys.executable).parent / "vnca")


def run(model: str, cache: Path, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION", "VNCA_COMPILATION"))}
    env.update(VNCA_CACHE_DIR=str(cache), VNCA_COMPILATION_CACHE="1")
    start = time.perf_counter()
    subprocess.run([VNCA, "train", "--model", model, "--profile", "laptop", "--steps", "10", "--out", str(out),
                    "--no-progress"], check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["baseline", "doubling", "nondoubling"])
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "first-step-cpu-2core.json")
    a = p.parse_args()
    rows = []
    for model in a.models:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cold = run(model, tmp / "cache", tmp / "run-1")
            warm = run(model, tmp / "cache", tmp / "run-2")
            entries = sum(1 for p in (tmp / "cache" / "compiled").rglob("*") if p.is_file())
        rows.append({"model": model, "cold_s": cold, "warm_s": warm, "cache_files": entries})
        print(f"{model:12} cold {cold:6.1f} s   warm {warm:6.1f} s   ({entries} cache files)", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    record = {"command": "vnca train --model M --profile laptop --steps 10 --out DIR --no-progress",
              "rows": rows, "cpus": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
              "commit": commit, "when": time.strftime("%Y-%m-%d")}
    from vnca.files import atomic_write

    atomic_write(a.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

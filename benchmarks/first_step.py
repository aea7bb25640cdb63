"""Time to the first step, as a student feels it: `vnca train --profile laptop --steps 10`, from the
command to the first step its progress bar shows, and to its end (ten steps, metrics logged,
checkpoint written), in a new process, first with an empty compilation cache and then again with the
cache the first run filled.

    python benchmarks/first_step.py                       # the three laptop models
    python benchmarks/first_step.py --models doubling --json out.json

Each model gets a fresh cache folder ($VNCA_CACHE_DIR), so the first run compiles everything; the
second reads the programs the first wrote (vnca.devices.use_compilation_cache, on by default).
Run it alone: it times wall clock.
"""

import argparse
import json
import re
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


def run(model: str, cache: Path, out: Path) -> tuple[float, float]:
    """(seconds to the first step shown by the progress bar, seconds to the command's end)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION", "VNCA_COMPILATION"))}
    env.update(VNCA_CACHE_DIR=str(cache), COLUMNS="100")
    start = time.perf_counter()
    command = subprocess.Popen([VNCA, "train", "--model", model, "--profile", "laptop", "--steps", "10", "--out",
                                str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first, seen = None, b""
    while chunk := command.stderr.read1(4096):
        seen += chunk
        if first is None and re.search(rb"\| +[1-9][0-9]*/10 ", seen):  # tqdm's "| 1/10 [...]"
            first = time.perf_counter() - start
    if command.wait():
        sys.exit(f"vnca train failed:\n{seen.decode(errors='replace')[-3000:]}")
    return first, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["baseline", "doubling", "nondoubling"])
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "first-step-cpu-2core.json")
    a = p.parse_args()
    rows = []
    for model in a.models:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (cold_first, cold), (warm_first, warm) = (run(model, tmp / "cache", tmp / f"run-{i}") for i in (1, 2))
            entries = sum(1 for p in (tmp / "cache" / "compiled").rglob("*") if p.is_file())
        rows.append({"model": model, "cold_first_step_s": cold_first, "warm_first_step_s": warm_first,
                     "cold_s": cold, "warm_s": warm, "cache_files": entries})
        print(f"{model:12} first step: cold {cold_first:5.1f} s, warm {warm_first:5.1f} s;   ten steps: "
              f"cold {cold:5.1f} s, warm {warm:5.1f} s   ({entries} cache files)", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    record = {"command": "vnca train --model M --profile laptop --steps 10 --out DIR",
              "rows": rows, "cpus": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
              "commit": commit, "when": time.strftime("%Y-%m-%d")}
    from vnca.files import atomic_write

    atomic_write(a.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

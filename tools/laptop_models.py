"""Train, evaluate and ship the laptop-scale models (the chapter "A VNCA on a laptop").

    python tools/laptop_models.py doubling baseline nondoubling   # in that order, resumable
    python tools/laptop_models.py nopool nodamage --images 500    # the pool chapter's ablations

For each model: `vnca train --profile laptop` into runs/<model>-laptop (resumed if stopped, its wall
time added up in training.json), `vnca evaluate` with K = 128 on all 10,000 test images (`--images` fewer) into
results/<model>-laptop.json, the run's curve and facts copied to results/laptop/<model>-laptop/,
and the weights shipped into vnca/weights/ with `vnca.pretrained.ship`. A step whose output exists
is skipped, so the command can be run again after any stop.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VNCA = str(Path(sys.executable).parent / "vnca")
# The pool chapter's ablations: the non-doubling laptop recipe less one ingredient.
ABLATIONS = {
    "nopool": (["--pool-size", "0", "--state-penalty", "0"], "no pool"),
    "nodamage": (["--no-damage"], "a pool without damage"),
}

# What each run adds to `vnca train --profile laptop`. Every shipped laptop model was trained with ten
# steps fused a call (their config.json); the profile takes one a call since, for a student's first
# step and memory. This tool trains them as they were shipped: for the doubling model's 40,000 steps
# ten a call are also 1.24 times the rate, and repay their longer compilation after about 2,800 steps
# (benchmarks/results/steps-per-call-doubling-laptop.json).
FUSED = ["--steps-per-call", "10"]
TRAIN_ARGS = {"baseline": FUSED, "doubling": FUSED, "nondoubling": FUSED,
              **{name: FUSED + extra for name, (extra, _) in ABLATIONS.items()}}


def model_of(choice: str) -> str:
    return "nondoubling" if choice in ABLATIONS else choice


def name_of(choice: str) -> str:
    return f"nondoubling-laptop-{choice}" if choice in ABLATIONS else f"{choice}-laptop"


def train(model: str, run: Path, extra: list[str]) -> dict:
    from vnca.checkpoint import read_metadata
    from vnca.files import atomic_write
    from vnca.pretrained import git_commit
    from vnca.recipes import train_config
    from vnca.runs import CHECKPOINT

    facts_path = run / "training.json"
    facts = json.loads(facts_path.read_text()) if facts_path.exists() else {"wall_seconds": 0.0, "sessions": []}
    steps = train_config(model, "laptop").steps
    checkpoint = run / CHECKPOINT
    if checkpoint.exists() and read_metadata(checkpoint)["step"] >= steps:
        return facts
    start = time.time()
    args = [VNCA, "train", "--model", model, "--profile", "laptop", "--out", str(run), "--no-progress", *extra]
    child = subprocess.Popen(args + (["--resume"] if checkpoint.exists() else []))
    # A stop request (Ctrl-C, or SIGTERM from a scheduler) goes to `vnca train`, which checkpoints and
    # exits; this process waits for it, so the run's wall time is still recorded below.
    previous = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    returncode = child.wait()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    seconds = time.time() - start
    facts["wall_seconds"] += seconds
    facts["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                              "seconds": seconds, "commit": git_commit(ROOT)})
    facts.update(cpus=os.cpu_count(), processor=platform.processor() or platform.machine(),
                 steps=read_metadata(checkpoint)["step"] if checkpoint.exists() else 0)
    atomic_write(facts_path, json.dumps(facts, indent=2).encode())
    if returncode:
        sys.exit(f"vnca train ended with status {returncode}; run this again to resume")
    return facts


def shipped_already(name: str, record: dict, training: dict, folder: Path | None = None) -> bool:
    """Whether the manifest already holds `name` at the record's step, with that record and those
    training facts: shipping it again would change nothing but the entry's commit, which should stay
    the one it was shipped at."""
    from vnca import pretrained

    try:
        entry = pretrained.manifest(folder).get(name)
    except pretrained.PretrainedError:  # no manifest yet
        return False
    evaluation = {key: record.get(key) for key in pretrained.EVALUATION_KEYS}
    return (entry is not None and entry["step"] == record.get("step") and entry["evaluation"] == evaluation
            and all(entry["training"].get(key) == value for key, value in training.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", choices=["baseline", "doubling", "nondoubling", *ABLATIONS])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    for choice in args.models:
        name = name_of(choice)
        run = args.runs / name
        facts = train(model_of(choice), run, TRAIN_ARGS.get(choice, []))
        record_path = ROOT / "results" / f"{name}.json"
        if not record_path.exists():
            subprocess.run([VNCA, "evaluate", str(run), "--images", str(args.images), "--out", str(record_path),
                            "--no-progress"], check=True)
        kept = ROOT / "results" / "laptop" / name
        kept.mkdir(parents=True, exist_ok=True)
        for file in ("metrics.jsonl", "metrics.png", "config.json", "training.json"):
            shutil.copy(run / file, kept / file)
        record = json.loads(record_path.read_text())
        training = {key: facts[key] for key in ("wall_seconds", "cpus", "processor")}
        if shipped_already(name, record, training):
            print(f"{name}: already shipped, at step {record['step']:,}", flush=True)
            continue
        from vnca import pretrained  # here, so that a long training run ships with the code of its end

        entry = pretrained.ship(name, run, record, training=training,
                                **({"ablation": ABLATIONS[choice][1]} if choice in ABLATIONS else {}))
        print(f"shipped {name}: {entry['bytes'] / 1e6:.1f} MB, bound {entry['evaluation']['log_likelihood']:.2f}"
              f" ± {entry['evaluation']['standard_error']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

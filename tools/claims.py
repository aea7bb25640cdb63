"""Measure the paper's claims for shipped models (the experiments chapter's `vnca.claims.measure`)
and keep the numbers beside their training curves, in results/laptop/<name>/claims.json, with the
SHA-256 of the weights measured: the chapter reads them, and tests/test_claims.py checks them
against the shipped weights on a few digits.

    python tools/claims.py                       # the three laptop models (a few minutes)
    python tools/claims.py nondoubling-laptop --json /tmp/x.json   # one, elsewhere
    python tools/claims.py --run runs/x --json runs/x/claims.json  # a run's checkpoint
"""

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="shipped models (default: the three laptop models)")
    p.add_argument("--run", type=Path, help="a run folder or checkpoint instead of shipped models")
    p.add_argument("--json", type=Path, help="write here instead of results/laptop/<name>/claims.json")
    p.add_argument("--images", type=int, default=1_000, help="test images for the digit agreement")
    p.add_argument("--long", type=int, default=10_000, help="steps the non-doubling grids run")
    a = p.parse_args()

    import jax

    from vnca import claims, pretrained
    from vnca import classifier as classifier_module
    from vnca.data import load_binarized_mnist
    from vnca.labels import load_mnist, recover_labels
    from vnca.files import atomic_write

    data = load_binarized_mnist()
    digits = recover_labels("test", progress=False).digit
    classifier = classifier_module.digit_classifier(*load_mnist("train"))
    if a.run:
        from vnca.runs import CHECKPOINT, load_run

        path = a.run / CHECKPOINT if a.run.is_dir() else a.run
        state, _ = load_run(path)
        todo = {str(a.run): (state.model, None)}
    else:
        names = a.names or pretrained.names(ablations=False)
        todo = {name: (pretrained.load(name), pretrained.manifest()[name]["sha256"]) for name in names}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    for name, (model, sha256) in todo.items():
        start = time.time()
        out = claims.measure(model, data.test, digits, classifier, jax.random.key(12),
                             images=a.images, long_steps=a.long)
        out.update(name=name, sha256=sha256, seconds=round(time.time() - start, 1), jax=jax.__version__,
                   machine=platform.machine(), commit=commit)
        target = a.json or ROOT / "results" / "laptop" / name / "claims.json"
        atomic_write(target, (json.dumps(out, indent=1) + "\n").encode())
        met = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in out["met"].items())
        print(f"{name}: {met} ({out['seconds']:.0f} s) -> {target}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""vnca against the same models in PyTorch, timed side by side in one run, on this machine's CPU.

    pip install torch==2.13.0                       # a benchmark dependency only
    python benchmarks/side_by_side.py               # every row (long: the paper's scale included)
    python benchmarks/side_by_side.py --scales laptop --json benchmarks/results/side-by-side.json
    python benchmarks/side_by_side.py --check       # first check that both compute the same numbers

Rows: a training step of each model at the paper's recipe (batch 32, 32 and 128 with its pool of
1,024) and at the laptop recipe, and the K = 128 importance-weighted bound of one test image. The
PyTorch side (`torch_models.py`) is written the way a PyTorch user writes it; vnca runs as `fit`
and `vnca evaluate` run it (training steps fused `steps_per_call` to a compiled call, the
non-doubling decoder scanning as far as the call's T need; the bound of 8 images at a time,
`--bound-images` in all, in chunks of 16 samples), in the environment that the `vnca` command makes
for itself (glibc's huge pages), which PyTorch's side then shares. Each row compiles or warms up both sides, then times
them in turns, `--repeats` times, and reports the medians and the ratio PyTorch / vnca (above 1:
vnca is faster). The non-doubling model trains with T drawn per step: PyTorch runs the same T as
vnca at every step.

Memory (`--memory`, on by default): each side of a row runs again alone, in a new process that
imports only its own library (`--memory-child` here for vnca, `torch_models.py --peak-memory` for
PyTorch), does the row's work once to compile or warm up and then `--repeats` more times, and reports
its peak resident set size (Linux's VmHWM): what a user's process holds at its largest, the library
itself included.
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vnca.devices import use_huge_pages

use_huge_pages()  # as the `vnca` command does, for both sides: started again with it, before JAX or torch

import equinox as eqx  # noqa: E402
import jax
import numpy as np

from inputs import images  # benchmarks/inputs.py
from models import header  # benchmarks/models.py
from vnca.evaluate import image_bounds
from vnca.files import atomic_write
from vnca.memory import release_freed_memory
from vnca.mesh import data_mesh, shard_batches
from vnca.recipes import train_config
from vnca.step import drawn_steps, init_state, place_state, scan_length, train_steps_in_place

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

SCALES = {"paper": "full", "laptop": "laptop"}
# training steps per timed repeat (vnca fuses them into one call) and repeats, by scale
TRAIN_STEPS = {"paper": 1, "laptop": 10}
PAUSE_S = 2.0


def vnca_train(config, steps: int, calls: int = 1, full_scan: bool = False):
    """`steps` training steps, as `fit` makes them: calls of `config.steps_per_call` steps each (on a
    CPU, the non-doubling decoder scanning only as far as each call's T need: `scan_length`;
    `full_scan`: always to max_steps, as before). The scan lengths of the first `calls` repeats are
    compiled here, so that no timed call compiles."""
    per = config.steps_per_call
    if steps % per:
        raise ValueError(f"{steps} steps are not whole calls of {per}")
    length = (lambda first: None) if full_scan else (lambda first: scan_length(config, first, per))
    mesh = data_mesh()
    state = place_state(init_state(config), mesh)
    batches = shard_batches(images(per * config.batch_size).reshape(per, config.batch_size, 32, 32), mesh)
    release_freed_memory()  # as `fit` does, after building the state and after compiling
    for n in {length(c * per) for c in range(calls * steps // per)}:
        train_steps_in_place.lower(batches, config, state, mesh, n).compile()
    release_freed_memory()

    def call():
        nonlocal state
        for _ in range(steps // per):
            state, metrics = train_steps_in_place(batches, config, state, mesh, length(int(state.step)))
        jax.block_until_ready(metrics)
    return call


def vnca_steps(config, step: int) -> int:
    """The T that vnca's `train_step` draws at `step`, so that PyTorch can run the same."""
    return int(drawn_steps(config, step, 1)[0])


def torch_train(name: str, config, steps: int):
    import torch
    import torch_models  # benchmarks/torch_models.py

    trainer = torch_models.Trainer(name, config, draw_steps=lambda step: vnca_steps(config, step))
    x = torch.from_numpy(images(config.batch_size))

    def call():
        for _ in range(steps):
            trainer.step(x)
    call.trainer = trainer
    return call


def vnca_bound(config, count: int):
    model = init_state(config).model
    x = images(count, seed=1)
    # the default batch (4 images per device on a CPU), unless it does not divide the images timed:
    # then all of them at once, so that no padding rows are computed
    default = 4 * jax.device_count()
    return lambda: image_bounds(model, x, jax.random.key(0), samples=128,
                                batch_size=None if count % default == 0 else count)


def torch_bound(name: str, config, count: int):
    import torch
    import torch_models

    model = torch_models.make(name, config.model_config)
    x = torch.from_numpy(images(count, seed=1))
    steps = getattr(config.model_config, "test_steps", None)
    generator = torch.Generator().manual_seed(0)
    return lambda: [torch_models.importance_weighted_bound(model, image, steps=steps, generator=generator)
                    for image in x]


def timed(call) -> float:
    # Let the other library's worker threads, which spin for a while after their work, go idle:
    # without this pause each side's times depend on which side ran just before.
    time.sleep(PAUSE_S)
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def row(work: str, name: str, scale: str, repeats: int, bound_images: int = 8) -> dict:
    config = train_config(name, SCALES[scale])
    if work == "train":
        steps = TRAIN_STEPS[scale]
        start = time.perf_counter()
        calls, per = (vnca_train(config, steps, 1 + repeats), torch_train(name, config, steps)), steps
        setup = time.perf_counter() - start  # vnca compiles here
    else:
        setup = None
        calls, per = (vnca_bound(config, bound_images), torch_bound(name, config, bound_images)), bound_images
    first = [timed(c) for c in calls]  # vnca compiles here (a bound), PyTorch warms up
    times = ([], [])
    for _ in range(repeats):
        for side, call in enumerate(calls):
            times[side].append(timed(call) / per)
    vnca_s, torch_s = (statistics.median(t) for t in times)
    return {"work": work, "model": name, "scale": scale, "batch": config.batch_size if work == "train" else None,
            "unit": "s per training step" if work == "train" else "s per image (K = 128)",
            "vnca_s": vnca_s, "pytorch_s": torch_s, "ratio": torch_s / vnca_s,
            "vnca_setup_s": setup, "vnca_first_call_s": first[0], "pytorch_first_call_s": first[1], "repeats": repeats,
            "vnca_all_s": times[0], "pytorch_all_s": times[1]}


def peak_mb() -> float:
    """This process's peak resident set size, in MB: Linux's VmHWM, which starts afresh when a process
    starts a program (`ru_maxrss` does not: a child started from a large parent reports the parent's)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB there too


def child_peak(command: list[str]) -> float:
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def memory(work: str, name: str, scale: str, repeats: int, bound_images: int) -> dict:
    """Each side's peak RSS doing the row's work, each alone in a new process with only its library."""
    config = train_config(name, SCALES[scale])
    common = ["--repeats", str(repeats), "--bound-images", str(bound_images)]
    vnca_mb = child_peak([sys.executable, __file__, "--memory-child", work, name, scale, *common])
    steps = TRAIN_STEPS[scale]
    spec = {"work": work, "model": name, "config": config.to_json(), "steps": steps, "repeats": repeats,
            "bound_images": bound_images,
            # the T of every step PyTorch takes, as vnca draws them (no JAX in that process)
            "draws": [vnca_steps(config, s) for s in range(steps * (1 + repeats))]
            if work == "train" and name == "nondoubling" else None}
    torch_mb = child_peak([sys.executable, str(Path(__file__).with_name("torch_models.py")), "--peak-memory",
                           json.dumps(spec)])
    return {"vnca_peak_mb": vnca_mb, "pytorch_peak_mb": torch_mb, "memory_ratio": vnca_mb / torch_mb}


def memory_child(work: str, name: str, scale: str, repeats: int, bound_images: int) -> None:
    """vnca's side of a row, alone: compile or warm up, `repeats` more, then print the peak RSS."""
    config = train_config(name, SCALES[scale])
    call = (vnca_train(config, TRAIN_STEPS[scale], 1 + repeats) if work == "train"
            else vnca_bound(config, bound_images))
    for _ in range(1 + repeats):
        call()
    print(json.dumps({"peak_mb": peak_mb()}))


def check():
    """Both sides compute the same encoder outputs and logits from the same parameters."""
    import torch
    import torch_models

    for name in ("baseline", "doubling", "nondoubling"):
        config = train_config(name, "laptop")
        model = init_state(config).model
        if name != "baseline":  # the rule's output layer starts at zero: give it weights to check
            shape = model.decoder.rule.output.weight.shape
            model = eqx.tree_at(lambda m: m.decoder.rule.output.weight, model,
                                0.05 * jax.random.normal(jax.random.key(1), shape))
        ported = torch_models.from_vnca(name, config.model_config, model)
        x = images(1)[0]
        z = np.random.default_rng(0).normal(size=config.model_config.latent).astype(np.float32)
        steps = getattr(config.model_config, "test_steps", None)
        mean, _ = model.encoder(x)
        logits = np.asarray(model.decoder(z, steps=steps))
        with torch.no_grad():
            torch_mean, _ = ported.encoder(torch.from_numpy(x)[None, None])
            torch_logits = ported.decode(torch.from_numpy(z)[None], steps)[0].numpy()
        np.testing.assert_allclose(torch_mean[0].numpy(), mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(torch_logits, logits, rtol=1e-3, atol=1e-3 * np.abs(logits).max())
        print(f"{name}: same encoder means and logits (largest |logit| {np.abs(logits).max():.3g})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", nargs="+", choices=["train", "bound"], default=["train", "bound"])
    parser.add_argument("--models", nargs="+", choices=["baseline", "doubling", "nondoubling"],
                        default=["baseline", "doubling", "nondoubling"])
    parser.add_argument("--scales", nargs="+", choices=list(SCALES), default=list(SCALES))
    parser.add_argument("--repeats", type=int, default=3, help="timed turns of each side per row")
    parser.add_argument("--bound-images", type=int, default=8, help="test images per timed bound")
    parser.add_argument("--check", action="store_true", help="check both sides compute the same first")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak memory of each side (each measured in its own process)")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure only the peak memory of the rows, into the --json file's rows of the same "
                             "work, model and scale (memory, unlike time, needs no quiet machine)")
    parser.add_argument("--memory-child", nargs=3, metavar=("WORK", "MODEL", "SCALE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.bound_images < 1:
        parser.error("--repeats and --bound-images must be at least 1")
    if args.memory_child:
        return memory_child(*args.memory_child, args.repeats, args.bound_images)
    if args.memory_only:
        if not args.json or not os.path.exists(args.json):
            parser.error("--memory-only adds to the rows of an existing --json file")
        with open(args.json) as f:
            record = json.load(f)
        for r in record["results"]:
            if r["work"] in args.work and r["model"] in args.models and r["scale"] in args.scales:
                r.update(memory(r["work"], r["model"], r["scale"], args.repeats, args.bound_images),
                         memory_commit=header()["commit"])
                print(f"{r['work']:<7}{r['model']:<13}{r['scale']:<8}{r['vnca_peak_mb']:>10.0f} MB"
                      f"{r['pytorch_peak_mb']:>10.0f} MB", flush=True)
                atomic_write(args.json, json.dumps(record, indent=2).encode())
        return
    import torch
    env = {**header(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count()}
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    if args.check:
        check()
    print(f"{'work':<7}{'model':<13}{'scale':<8}{'vnca s':>10}{'PyTorch s':>11}{'PyTorch/vnca':>14}"
          + (f"{'vnca MB':>10}{'PyTorch MB':>12}{'vnca/PyTorch':>14}" if args.memory else ""), flush=True)
    results = []
    record = {}
    if args.json and os.path.exists(args.json):  # keep the rows of other runs, replace those measured again
        with open(args.json) as f:
            record = json.load(f)
    for scale in args.scales:
        for work in args.work:
            for name in args.models:
                r = {**row(work, name, scale, args.repeats, args.bound_images), "commit": env["commit"]}
                if args.memory:
                    r.update(memory(work, name, scale, args.repeats, args.bound_images))
                results.append(r)
                print(f"{work:<7}{name:<13}{scale:<8}{r['vnca_s']:>10.3f}{r['pytorch_s']:>11.3f}{r['ratio']:>14.2f}"
                      + (f"{r['vnca_peak_mb']:>10.0f}{r['pytorch_peak_mb']:>12.0f}{r['memory_ratio']:>14.2f}"
                         if args.memory else ""), flush=True)
                if args.json:  # after every row, so a long run stopped part-way keeps what it measured
                    kept = [p for p in record.get("results", []) if (p["work"], p["model"], p["scale"]) not in
                            {(q["work"], q["model"], q["scale"]) for q in results}]
                    atomic_write(args.json, json.dumps({**record, "environment": env, "results": kept + results},
                                                       indent=2).encode())


if __name__ == "__main__":
    main()

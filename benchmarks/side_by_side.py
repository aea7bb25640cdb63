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
`--bound-images` in all, in chunks of 16 samples). Each row compiles or warms up both sides, then times
them in turns, `--repeats` times, and reports the medians and the ratio PyTorch / vnca (above 1:
vnca is faster). The non-doubling model trains with T drawn per step: PyTorch runs the same T as
vnca at every step.
"""

import argparse
import dataclasses
import json
import os
import statistics
import time

import equinox as eqx
import jax
import numpy as np
import torch

import torch_models  # benchmarks/torch_models.py
from models import header  # benchmarks/models.py
from vnca.evaluate import image_bounds
from vnca.files import atomic_write
from vnca.mesh import data_mesh, shard_batches
from vnca.recipes import train_config
from vnca.step import drawn_steps, init_state, place_state, scan_length, train_steps_in_place

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)

SCALES = {"paper": "full", "laptop": "laptop"}
# training steps per timed repeat (vnca fuses them into one call) and repeats, by scale
TRAIN_STEPS = {"paper": 1, "laptop": 10}
PAUSE_S = 2.0


def images(count: int, seed: int = 0) -> np.ndarray:
    """Binary 32x32 images with MNIST's share of ink, zero on the 2-pixel border."""
    rng = np.random.default_rng(seed)
    x = np.zeros((count, 32, 32), np.float32)
    x[:, 2:30, 2:30] = rng.random((count, 28, 28)) < 0.13
    return x


def vnca_train(config, steps: int, calls: int = 1, full_scan: bool = False):
    """A training call of `steps` steps, as `fit` makes it (on a CPU, the non-doubling decoder scans only
    as far as the call's T need: `scan_length`; `full_scan`: always to max_steps, as before). The scan
    lengths of the first `calls` calls are compiled here, so that no timed call compiles."""
    length = (lambda first: None) if full_scan else (lambda first: scan_length(config, first, steps))
    mesh = data_mesh()
    state = place_state(init_state(config), mesh)
    config = dataclasses.replace(config, steps_per_call=steps, log_every=steps, checkpoint_every=steps)
    batches = shard_batches(images(steps * config.batch_size).reshape(steps, config.batch_size, 32, 32), mesh)
    for n in {length(c * steps) for c in range(calls)}:
        train_steps_in_place.lower(batches, config, state, mesh, n).compile()

    def call():
        nonlocal state
        state, metrics = train_steps_in_place(batches, config, state, mesh, length(int(state.step)))
        jax.block_until_ready(metrics)
    return call


def vnca_steps(config, step: int) -> int:
    """The T that vnca's `train_step` draws at `step`, so that PyTorch can run the same."""
    return int(drawn_steps(config, step, 1)[0])


def torch_train(name: str, config, steps: int):
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


def check():
    """Both sides compute the same encoder outputs and logits from the same parameters."""
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
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.bound_images < 1:
        parser.error("--repeats and --bound-images must be at least 1")
    env = {**header(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count()}
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    if args.check:
        check()
    print(f"{'work':<7}{'model':<13}{'scale':<8}{'vnca s':>10}{'PyTorch s':>11}{'PyTorch/vnca':>14}", flush=True)
    results = []
    record = {}
    if args.json and os.path.exists(args.json):  # keep the rows of other runs, replace those measured again
        with open(args.json) as f:
            record = json.load(f)
    for scale in args.scales:
        for work in args.work:
            for name in args.models:
                r = {**row(work, name, scale, args.repeats, args.bound_images), "commit": env["commit"]}
                results.append(r)
                print(f"{work:<7}{name:<13}{scale:<8}{r['vnca_s']:>10.3f}{r['pytorch_s']:>11.3f}{r['ratio']:>14.2f}",
                      flush=True)
                if args.json:  # after every row, so a long run stopped part-way keeps what it measured
                    kept = [p for p in record.get("results", []) if (p["work"], p["model"], p["scale"]) not in
                            {(q["work"], q["model"], q["scale"]) for q in results}]
                    atomic_write(args.json, json.dumps({**record, "environment": env, "results": kept + results},
                                                       indent=2).encode())


if __name__ == "__main__":
    main()

"""Issue 33's claims, measured for a model (a shipped name or a run folder's checkpoint):

- reconstruction agreement: an MLP classifier trained on MNIST's training labels reads the mean
  reconstruction (sigmoid of the logits decoded from the posterior mean) as the input's digit,
  against how often it reads the input itself;
- holds (NCA decoders): 64 test digits grown from their posterior means for 10,000 steps; the
  mean log p(x | grid) at its best in steps 32..64, at 1,000 and at 10,000;
- regrows: a 16x16 square zeroed (all channels) at step 64; the mean log p 64 steps later against
  the undamaged run's;
- samples: the share of 1,000 prior samples (Bernoulli) the classifier calls with p >= 0.9,
  against test digits', and the spread over digits.

    python measure.py nondoubling-laptop --images 1000 --json out.json
"""
import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vnca import classifier as classifier_module
from vnca import figures, pretrained
from vnca.data import load_binarized_mnist
from vnca.labels import load_mnist, recover_labels
import vnca.nca
from vnca.nondoubling import NonDoublingDecoder
from vnca.pool import damage
from vnca.vae import bernoulli_log_likelihood

from vnca.devices import use_cpu_cores

use_cpu_cores()  # one JAX device per core, as the `vnca` command does (importing vnca does not)


def load(name):
    if Path(name).exists():
        import patches
        from vnca.runs import CHECKPOINT, load_run
        args = patches.saved(name)
        if args is not None:
            args.warm = ""
            patches.apply(args, args.steps)
        path = Path(name)
        path = path / CHECKPOINT if path.is_dir() else path
        return load_run(path)[0].model
    return pretrained.load(name)


def scores_over_time(model, images, key, steps, damage_at=None, every=1):
    """Mean over images of log p(x | grid) after each step (every `every`-th kept)."""
    decoder = model.decoder
    means = figures.encode(model, images)[0]

    @jax.jit
    def go(means, images, key):
        def one(z, x, k):
            keys = jax.random.split(k, steps + 1)

            def body(state, t):
                # vnca.nca.step looked up here: a run's --clip-hidden patches it
                state = vnca.nca.step(decoder.rule, state, keys[1 + t], decoder.config.update_probability)
                if damage_at is not None:
                    state = jnp.where(t + 1 == damage_at, damage(state, keys[0]), state)
                return state, bernoulli_log_likelihood(state[..., 0], x)

            return jax.lax.scan(body, decoder.seed(z), jnp.arange(steps))[1]

        return jax.vmap(one)(means, images, jax.random.split(key, len(images))).mean(0)

    return np.asarray(go(means, jnp.asarray(images, jnp.float32), key))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--images", type=int, default=1000, help="test images for agreement")
    p.add_argument("--long", type=int, default=10_000, help="steps of the holds run")
    p.add_argument("--json")
    a = p.parse_args()
    t0 = time.time()
    model = load(a.model)
    data = load_binarized_mnist()
    labels = np.asarray(recover_labels("test", progress=False).digit)
    grey, digits = load_mnist("train")
    classifier = classifier_module.digit_classifier(grey, digits)
    rows = np.random.default_rng(3).choice(len(data.test), a.images, replace=False)
    x = data.test[rows].astype(np.float32)
    means = figures.encode(model, x)[0]
    logits = np.concatenate([
        np.asarray(figures.decode(model, means[i:i + 100], jax.random.key(i)))
        for i in range(0, len(x), 100)])
    recon = 1 / (1 + np.exp(-logits))
    read_input = float((classifier.predict(x.reshape(len(x), -1)) == labels[rows]).mean())
    read_recon = float((classifier.predict(recon.reshape(len(x), -1)) == labels[rows]).mean())
    out = {"model": a.model, "images": a.images, "classifier_reads_input": read_input,
           "classifier_reads_reconstruction": read_recon,
           "agreement_ratio": read_recon / read_input}
    q = classifier_module.sample_quality(model, classifier, jax.random.key(10))
    tq = classifier_module.classified(classifier, data.test[np.random.default_rng(3).choice(len(data.test), 2000, replace=False)])
    out["samples_confident"] = q["confident"]
    out["samples_digits"] = [round(float(v), 3) for v in q["digits"]]
    out["test_confident"] = tq["confident"]
    print(json.dumps(out), flush=True)
    if isinstance(model.decoder, NonDoublingDecoder):
        x64 = data.test[np.random.default_rng(4).choice(len(data.test), 64, replace=False)]
        held = scores_over_time(model, x64, jax.random.key(5), a.long)
        best = float(held[31:64].max())
        out["holds"] = {"best_32_64": best, "at_64": float(held[63]), "at_1000": float(held[999]),
                        f"at_{a.long}": float(held[a.long - 1]),
                        "curve": [float(held[i]) for i in np.unique(np.geomspace(1, a.long, 60).astype(int)) - 1]}
        hit = scores_over_time(model, x64, jax.random.key(6), 128, damage_at=64)
        clean = scores_over_time(model, x64, jax.random.key(6), 128)
        out["regrows"] = {"at_128_damaged": float(hit[127]), "at_128_clean": float(clean[127]),
                          "gap": float(clean[127] - hit[127]), "right_after": float(hit[64])}
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({k: v for k, v in out.items() if k != "holds"} | {"holds": {k: v for k, v in out.get("holds", {}).items() if k != "curve"}}), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

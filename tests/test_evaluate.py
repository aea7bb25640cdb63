"""Evaluation: the chunked, sharded bound against a direct computation; records; the table; the CLI."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vnca import pretrained
from vnca.devices import cpu_cores, cpu_device_count
from vnca.evaluate import book_records, read_records, results_table, summarise

SHARDED = textwrap.dedent("""
    import math
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    from vnca.doubling import DoublingConfig, doubling_vnca
    from vnca.evaluate import image_bounds
    from vnca.mesh import data_mesh
    from vnca.nondoubling import NonDoublingConfig, nondoubling_vnca
    from vnca.vae import bernoulli_log_likelihood, normal_log_density
    assert jax.device_count() == 8

    @eqx.filter_jit  # one program per model: run op by op, this test took a minute longer
    def direct(model, images, keys, samples=12):
        # Written out without lax.map, chunks, batches or devices: all K samples of an image at once.
        def bound(x, key):
            mean, log_scale = model.encoder(x)
            def log_weight(k):
                sample_key, decoder_key = jax.random.split(k)
                z = mean + jnp.exp(log_scale) * jax.random.normal(sample_key, mean.shape)
                logits = model.decoder(z, key=decoder_key)
                return (bernoulli_log_likelihood(logits, x) + normal_log_density(z)
                        - normal_log_density(z, mean, log_scale))
            log_w = jax.vmap(log_weight)(jax.random.split(key, samples))
            return jax.scipy.special.logsumexp(log_w) - math.log(samples)
        return jax.vmap(bound)(images, keys)

    images = (np.random.default_rng(0).random((11, 32, 32)) < 0.2).astype(np.float32)
    indices = np.array([3, 50, 7, 8, 9, 1000, 11, 12, 13, 14, 15])
    key = jax.random.key(42)
    models = {
        "doubling": doubling_vnca(DoublingConfig(latent=8, hidden=8, residual_blocks=1), key=jax.random.key(1)),
        "nondoubling, random updates": nondoubling_vnca(NonDoublingConfig(latent=8, hidden=8, test_steps=5,
                                                                          update_probability=0.5), key=jax.random.key(2)),
    }
    for name, model in models.items():
        # Untrained, the update rule is zero; perturb it so that decoding matters.
        leaves, tree = jax.tree.flatten(model)
        noise = jax.random.split(jax.random.key(5), len(leaves))
        model = jax.tree.unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape) if hasattr(l, "dtype")
                                          and jnp.issubdtype(l.dtype, jnp.floating) else l for l, k in zip(leaves, noise)])
        expected = np.asarray(direct(model, jnp.asarray(images), jnp.stack([jax.random.fold_in(key, int(i))
                                                                             for i in indices])))
        eight = image_bounds(model, images, key, samples=12, chunk=5, indices=indices, batch_size=8)
        one = image_bounds(model, images, key, samples=12, chunk=12, indices=indices, batch_size=3,
                           mesh=data_mesh(jax.devices()[:1]))
        alone = image_bounds(model, images[5:6], key, samples=12, indices=indices[5:6], batch_size=8)
        few = image_bounds(model, images[:3], key, samples=12, indices=indices[:3])  # 3 of 8 devices
        print(name, expected[:3], eight[:3])
        np.testing.assert_allclose(eight, expected, rtol=2e-5, atol=1e-3)
        np.testing.assert_allclose(one, expected, rtol=2e-5, atol=1e-3)
        np.testing.assert_allclose(alone, expected[5:6], rtol=2e-5, atol=1e-3)
        np.testing.assert_allclose(few, expected[:3], rtol=2e-5, atol=1e-3)
        assert np.ptp(expected) > 1.0  # the images differ, so a mix-up of keys or rows would show
    print("ok")
""")


def test_a_few_images_take_a_batch_and_devices_they_fill(monkeypatch):
    """One image is a batch of one on one device; three on two devices a batch of four (two per
    device), not the default batch of eight padded with blanks."""
    import jax
    import vnca.evaluate
    from vnca.doubling import DoublingConfig, doubling_vnca

    assert jax.device_count() == 2  # the tests' devices: one per core (conftest)
    model = doubling_vnca(DoublingConfig(latent=4, hidden=4, residual_blocks=0, encoder_width=2),
                          key=jax.random.key(0))
    seen = []
    plain = vnca.evaluate.batch_bounds

    def recorded(model, images, indices, *rest):
        seen.append((images.shape[0], len(images.sharding.device_set)))
        return plain(model, images, indices, *rest)

    monkeypatch.setattr(vnca.evaluate, "batch_bounds", recorded)
    images = np.zeros((3, 32, 32), np.float32)
    vnca.evaluate.image_bounds(model, images[:1], jax.random.key(1), samples=2)
    assert seen == [(1, 1)]
    vnca.evaluate.image_bounds(model, images, jax.random.key(1), samples=2)
    assert seen[1:] == [(4, 2)]


def test_chunked_sharded_bounds_equal_a_direct_computation():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr[-3000:]


def test_summary_is_the_mean_and_its_standard_error():
    s = summarise([-80.0, -82.0, -90.0, -88.0])
    assert s["log_likelihood"] == pytest.approx(-85.0)
    assert s["standard_error"] == pytest.approx(np.std([-80, -82, -90, -88], ddof=1) / 2)
    assert s["images"] == 4 and math.isnan(summarise([-80.0])["standard_error"])


def test_results_table_has_a_column_per_scale_and_skips_other_records(tmp_path):
    (tmp_path / "doubling.json").write_text(json.dumps(
        {"model": "doubling", "scale": "full", "log_likelihood": -84.0712, "standard_error": 0.2549,
         "images": 10_000}))
    (tmp_path / "doubling-laptop.json").write_text(json.dumps(
        {"model": "doubling", "scale": "laptop", "log_likelihood": -101.5, "standard_error": 0.5, "images": 2_000}))
    (tmp_path / "smoke.json").write_text(json.dumps(
        {"model": "baseline", "scale": "smoke", "log_likelihood": -150.0, "standard_error": 1.0, "images": 8}))
    (tmp_path / "other.json").write_text(json.dumps({"not": "a record"}))
    table = results_table(read_records(tmp_path))
    lines = table.splitlines()
    assert lines[0] == "| model | paper | reproduction | this book, full scale | this book, laptop scale |"
    assert "| doubling VNCA | -84.23 | -84.15 | -84.07 ± 0.25 (10,000 images) | -101.50 ± 0.50 (2,000 images) |" in lines
    assert "| convolutional baseline | not reported | -84.64 | - | - |" in lines  # smoke is not a result
    assert "| non-doubling VNCA | -90.97 | -89.3 | - | - |" in lines
    assert "-150.00" in results_table(read_records(tmp_path), scales=("smoke",))


def test_book_records_are_the_shipped_ones_then_the_checkouts_then_yours(tmp_path, monkeypatch):
    def by_key(records):
        return {(r["scale"], r["model"]): r for r in records}

    book = tmp_path / "anywhere" / "book"  # a notebook downloaded alone: no ../results
    book.mkdir(parents=True)
    monkeypatch.chdir(book)
    monkeypatch.setenv("VNCA_RUNS", str(tmp_path / "runs"))
    shipped = by_key(book_records())
    for name in pretrained.names(ablations=False):
        entry = pretrained.manifest()[name]
        record = shipped["laptop", entry["model"]]
        assert record["log_likelihood"] == entry["evaluation"]["log_likelihood"]
        assert record["images"] == entry["evaluation"]["images"] and record["step"] == entry["step"]
    # The pool chapter's ablations are shipped too, as "custom" records that no table column shows.
    assert {key for key in shipped if key[0] == "laptop"} == {
        ("laptop", model) for model in ("baseline", "doubling", "nondoubling")}
    assert {scale for scale, _ in shipped} <= {"laptop", "custom"}
    # A checkout's results/ replaces a shipped record; your own runs' records come last.
    (book.parent / "results").mkdir()
    (book.parent / "results" / "doubling-laptop.json").write_text(json.dumps(
        {"model": "doubling", "scale": "laptop", "log_likelihood": -99.0, "standard_error": 0.5, "images": 10}))
    (tmp_path / "runs" / "results").mkdir(parents=True)
    (tmp_path / "runs" / "results" / "doubling.json").write_text(json.dumps(
        {"model": "doubling", "scale": "full", "log_likelihood": -84.0, "standard_error": 0.3, "images": 10_000}))
    records = by_key(book_records())
    assert records["laptop", "doubling"]["log_likelihood"] == -99.0
    assert records["full", "doubling"]["log_likelihood"] == -84.0
    assert records["laptop", "baseline"] == shipped["laptop", "baseline"]
    assert "-84.00 ± 0.30 (10,000 images)" in results_table(list(records.values()))


def test_evaluate_command(tmp_path, smoke_run):
    vnca = Path(sys.executable).parent / "vnca"
    run = smoke_run("baseline")
    args = [str(vnca), "evaluate", str(run), "--samples", "4", "--images", "24", "--no-progress"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((run / "evaluation.json").read_text())
    assert record["model"] == "baseline" and record["scale"] == "smoke" and record["samples"] == 4
    assert record["images"] == 24 and record["step"] == 2 and record["test_images"] == 10_000
    assert record["log_likelihood"] < 0 and record["standard_error"] > 0 and record["images_per_second"] > 0
    assert record["precision"] == "highest"
    assert "log p(x) >=" in first.stdout
    again_args = [*args[:2], str(run / "checkpoint.vnca"), *args[3:], "--out", str(tmp_path / "again.json"),
                  # 5 images per CPU device: the last batch is part empty
                  "--batch-size", str(5 * cpu_device_count(cpu_cores()))]
    # Finished images are kept in OUT.partial; one of another evaluation is refused, not overwritten.
    partial = tmp_path / "again.json.partial"
    partial.write_text(json.dumps({"of": {"weights": "another model"}, "bounds": [], "seconds": 0.0}))
    refused = subprocess.run(again_args, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and "holds part of another evaluation" in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "again.json").exists() and partial.exists()
    partial.unlink()
    again = subprocess.run(again_args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not partial.exists()  # the record holds it all
    repeated = json.loads((tmp_path / "again.json").read_text())
    assert repeated["log_likelihood"] == pytest.approx(record["log_likelihood"], abs=1e-4)  # seeded per image
    for bad, message in [([str(tmp_path / "nowhere")], "no such run or checkpoint"),
                         ([str(run), "--samples", "0"], "at least 1"),
                         ([str(run), "--images", "20000"], "images must be between 1 and 10000")]:
        result = subprocess.run([str(vnca), "evaluate", *bad], capture_output=True, text=True, timeout=900)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]


def test_a_stopped_evaluation_resumes_from_its_saved_blocks_with_the_same_numbers(tmp_path, data_dir, monkeypatch):
    import jax
    import vnca.evaluate
    from vnca.data import load_binarized_mnist
    from vnca.evaluate import image_bounds, saved_bounds
    from vnca.recipes import train_config
    from vnca.step import init_state

    model = init_state(train_config("baseline", "smoke")).model
    test = load_binarized_mnist(data_dir).test
    rows = np.array([5, 17, 900, 3000, 42, 7777, 12, 9999, 1, 2])
    whole = image_bounds(model, test[rows], jax.random.key(3), samples=4, indices=rows)
    partial = tmp_path / "evaluation.json.partial"

    calls = []
    def stopped_after_one_block(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # the laptop's lid closes
        calls.append(len(args[1]))
        return image_bounds(*args, **kwargs)
    monkeypatch.setattr(vnca.evaluate, "image_bounds", stopped_after_one_block)
    with pytest.raises(KeyboardInterrupt):
        saved_bounds(model, test, rows, 3, partial, block=4, samples=4, progress=False)
    saved = json.loads(partial.read_text())
    assert calls == [4] and len(saved["bounds"]) == 4 and saved["seconds"] > 0

    resumed = []
    def counted(*args, **kwargs):
        resumed.append(len(args[1]))
        return image_bounds(*args, **kwargs)
    monkeypatch.setattr(vnca.evaluate, "image_bounds", counted)
    bounds, seconds = saved_bounds(model, test, rows, 3, partial, block=4, samples=4, progress=False)
    assert resumed == [4, 2]  # only the images not yet saved
    np.testing.assert_array_equal(bounds, whole)  # exactly the uninterrupted numbers
    assert seconds > saved["seconds"]
    again, _ = saved_bounds(model, test, rows, 3, partial, block=4, samples=4, progress=False)
    assert resumed == [4, 2] and np.array_equal(again, whole)  # all saved: nothing recomputed

    for other in [dict(seed=4), dict(samples=8), dict(rows=rows[:-1])]:
        args = dict(seed=3, samples=4, rows=rows) | other
        with pytest.raises(ValueError, match="another evaluation"):
            saved_bounds(model, test, args["rows"], args["seed"], partial, samples=args["samples"], progress=False)
    changed = jax.tree.map(lambda x: x + 1e-3 if isinstance(x, jax.Array) else x, model)
    with pytest.raises(ValueError, match="another evaluation"):
        saved_bounds(changed, test, rows, 3, partial, samples=4, progress=False)

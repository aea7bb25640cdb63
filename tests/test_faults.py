"""Nothing lost, nothing silently wrong: training, evaluation and the data cache under faults and
bad input. Each test reproduces one case that once lost work or returned wrong data."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vnca import checkpoint
from vnca import data as D
from vnca import files as files_module
from vnca import labels as labels_module
from vnca.checkpoint import CheckpointError
from vnca.cli import main
from vnca.data import BinarizedMNIST
from vnca.evaluate import run_scale
from vnca.recipes import train_config
from vnca.runs import CHECKPOINT, METRICS, load_run, read_metrics
from vnca.train import fit

from conftest import VNCA


@pytest.fixture(scope="module")
def data(data_dir):
    full = D.load_binarized_mnist()
    return BinarizedMNIST(train=full.train[:512], test=full.test[:64])


def _config(**overrides):
    base = dict(steps=8, steps_per_call=2, log_every=2, checkpoint_every=4, batch_size=4)
    return train_config("doubling", "smoke", **{**base, **overrides})


def _params(state):
    return [np.asarray(p) for p in jax.tree.leaves(eqx.filter(state.model, eqx.is_inexact_array))]


# ------------------------------------------------------------------------------- 1. off the grid

def test_a_run_resumed_off_the_call_grid_still_logs_and_saves_on_schedule(tmp_path, data, monkeypatch):
    config = _config(steps=40, steps_per_call=5, log_every=10, checkpoint_every=20)
    fit(_config(steps=7, steps_per_call=5, log_every=10, checkpoint_every=20), tmp_path, data=data,
        progress=False)  # stopped at step 7, off the grid of 5
    saved, real_save = [], checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, tree, meta: (saved.append(meta["step"]),
                                                                      real_save(path, tree, meta)))
    fit(config, tmp_path, data=data, progress=False, resume=True)  # calls end at 12, 17, 22, ...
    assert saved == [22, 40]  # crossed 20, then the end; before the fix: [40]
    assert [r["step"] for r in read_metrics(tmp_path)] == [7, 12, 22, 32, 40]


# ---------------------------------------------------------------------- 2. resume with nothing

def test_resume_without_a_checkpoint_is_an_error_and_a_fresh_run_starts_clean_metrics(tmp_path, data):
    (tmp_path / METRICS).write_text('{"step": 5, "loss": 1.0}\n{"step": 10, "loss": 1.0}\n')
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        fit(_config(), tmp_path, data=data, progress=False, resume=True)
    assert not (tmp_path / CHECKPOINT).exists()
    with pytest.raises(FileExistsError, match="not this run's"):  # metrics.jsonl of another run
        fit(_config(steps=4), tmp_path, data=data, progress=False)
    fit(_config(steps=4), tmp_path, data=data, progress=False, force=True)  # an explicit fresh start
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4]  # no zig-zag 5, 10, 2, 4


def test_resume_without_a_checkpoint_on_the_command_line(tmp_path, data_dir):
    result = subprocess.run([str(VNCA), "train", "--model", "baseline", "--profile", "smoke", "--out",
                             str(tmp_path / "empty"), "--resume", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no checkpoint to resume from" in result.stderr, result.stderr


# ------------------------------------------------------------- 3. evaluate checks before working

@pytest.fixture
def no_evaluation(monkeypatch):
    import vnca.cli

    def refuse(*args, **kwargs):
        raise AssertionError("evaluated before checking where the record goes")

    monkeypatch.setattr(vnca.cli, "evaluate_model", refuse)


def test_evaluate_refuses_an_unwritable_record_path_before_evaluating(tmp_path, smoke_run, no_evaluation,
                                                                      capsys):
    run = smoke_run("baseline")
    (tmp_path / "a-file").write_text("")
    for out, message in [(tmp_path, "Is a directory"), (tmp_path / "a-file" / "record.json", "Not a directory")]:
        assert main(["evaluate", str(run), "--out", str(out), "--no-progress"]) == 4
        err = capsys.readouterr().err
        assert message in err and str(out) in err, err


def test_evaluate_prints_the_record_when_saving_fails_after_evaluating(tmp_path, smoke_run, monkeypatch,
                                                                       capsys):
    import vnca.cli

    run = smoke_run("baseline")

    def full_disk(record, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(vnca.cli, "write_record", full_disk)
    assert main(["evaluate", str(run), "--samples", "2", "--images", "3", "--no-progress"]) == 4
    out, err = capsys.readouterr()
    record = json.loads(out)  # the result is on stdout, whole
    assert record["images"] == 3 and np.isfinite(record["log_likelihood"])
    assert "could not be saved" in err and "the disk is full" in err and str(run) in err


# ----------------------------------------------------------------- 4. the parsed cache verified

def test_an_altered_parsed_cache_is_rebuilt_not_returned(tmp_path, data_dir):
    good = D.load_split("test", cache=tmp_path)
    (packed,) = (tmp_path / "parsed").glob("*.npz")
    with np.load(packed) as f:
        arrays = dict(f)
    np.savez(packed, **{**arrays, "bits": np.zeros_like(arrays["bits"])})  # zeroed, checksum kept
    with pytest.warns(UserWarning, match="do not match their checksum"):
        again = D.load_split("test", cache=tmp_path)
    np.testing.assert_array_equal(again, good)
    assert again.sum() > 0
    np.savez(packed, bits=np.zeros_like(arrays["bits"]))  # an entry of the old, unverified kind
    with pytest.warns(UserWarning, match="making it again"):
        np.testing.assert_array_equal(D.load_split("test", cache=tmp_path), good)
    np.testing.assert_array_equal(D.load_split("test", cache=tmp_path), good)  # rebuilt, now trusted


def test_a_missing_data_folder_is_an_error_even_with_a_warm_cache(tmp_path, data_dir, monkeypatch):
    D.load_split("test", cache=tmp_path)  # warm
    monkeypatch.setenv("VNCA_DATA_DIR", str(tmp_path / "no-such-folder"))
    with pytest.raises(D.DataError, match="not an existing folder"):
        D.load_split("test", cache=tmp_path)
    with pytest.raises(D.DataError, match="not an existing folder"):
        labels_module.recover_labels("test", cache=tmp_path)


# ------------------------------------------------------------------- 5. OSErrors become messages

def test_out_naming_a_file_is_one_clear_message(tmp_path, data_dir):
    (tmp_path / "taken").write_text("")
    result = subprocess.run([str(VNCA), "train", "--model", "baseline", "--profile", "smoke", "--out",
                             str(tmp_path / "taken"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr and "a file, where a folder is needed" in result.stderr
    assert str(tmp_path / "taken") in result.stderr


@pytest.mark.parametrize("failing_write, code, advice", [(1, errno.EACCES, "no permission"),
                                                          (2, errno.ENOSPC, "the disk is full")])
def test_a_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, data_dir, monkeypatch, capsys,
                                                           failing_write, code, advice):
    real, calls = checkpoint.atomic_write, []

    def fails(path, content):
        calls.append(path)
        if len(calls) == failing_write:
            raise OSError(code, os.strerror(code), str(path))
        real(path, content)

    monkeypatch.setattr(checkpoint, "atomic_write", fails)
    run = tmp_path / "run"
    status = main(["train", "--model", "baseline", "--profile", "smoke", "--out", str(run), "--steps", "40",
                   "--batch-size", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 4 and advice in err and str(run / CHECKPOINT) in err, err
    if failing_write == 1:
        assert "No checkpoint was saved" in err and not (run / CHECKPOINT).exists()
    else:  # the first checkpoint, step 20, survives and is named
        assert "step 20" in err and checkpoint.read_metadata(run / CHECKPOINT)["step"] == 20
    assert not list(run.glob(".*.part"))


def test_explain_names_the_path_and_what_to_do(tmp_path):
    target = tmp_path / "record.json"
    with pytest.raises(IsADirectoryError) as caught:
        files_module.check_writable(tmp_path)
    assert "a folder, where a file is needed" in files_module.explain(caught.value)
    err = OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))
    assert files_module.explain(err) == f"Read-only file system: {target} (a read-only file system: choose another folder)"
    assert files_module.check_writable(target) == target and not list(tmp_path.iterdir())  # the probe left nothing


# ------------------------------------------------- 6. SIGKILL during a checkpoint write, then resume

KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from vnca.devices import use_cpu_cores
    use_cpu_cores()  # as this test's own process (conftest): the same devices, the same numbers
    from vnca import checkpoint
    from vnca.data import BinarizedMNIST, load_binarized_mnist
    from vnca.recipes import train_config
    from vnca.train import fit

    point, out = sys.argv[1], Path(sys.argv[2])
    full = load_binarized_mnist()
    data = BinarizedMNIST(train=full.train[:512], test=full.test[:64])
    config = train_config("doubling", "smoke", steps=8, steps_per_call=2, log_every=2, checkpoint_every=2,
                          batch_size=4)
    real_write, writes = checkpoint.atomic_write, []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def write(path, content):  # the third checkpoint (step 6) is the one that dies
        writes.append(path)
        if len(writes) < 3:
            return real_write(path, content)
        if point == "mid-write":
            real_fdopen = os.fdopen
            def fdopen(fd, mode):
                f = real_fdopen(fd, mode)
                f.write(content[: len(content) // 2])
                f.flush()
                die()
            os.fdopen = fdopen
        elif point == "before-rename":
            os.replace = lambda *a: die()
        elif point == "after-rename":
            real_replace = os.replace
            os.replace = lambda *a: (real_replace(*a), die())
        real_write(path, content)

    checkpoint.atomic_write = write
    fit(config, out, data=data, progress=False)
    print("not killed")
""")


@pytest.mark.parametrize("point, survivor", [("mid-write", 4), ("before-rename", 4), ("after-rename", 6)])
def test_sigkill_during_a_checkpoint_write_then_resume_is_exact(tmp_path, data, point, survivor):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLER, point, str(run)], capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr[-2000:]
    if point != "after-rename":
        assert list(run.glob(f".{CHECKPOINT}.*.part")), "the kill should have left a temporary file"
    assert checkpoint.read_metadata(run / CHECKPOINT)["step"] == survivor  # the last good one, intact
    config = train_config("doubling", "smoke", steps=8, steps_per_call=2, log_every=2, checkpoint_every=2,
                          batch_size=4)
    resumed = fit(config, run, data=data, progress=False, resume=True)
    straight = fit(config, tmp_path / "straight", data=data, progress=False)
    for a, b in zip(_params(straight), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.vnca", "config.json", "metrics.jsonl"]
    assert [r["step"] for r in read_metrics(run)] == [2, 4, 6, 8]


# ----------------------------------------------------------------- 7. only the paper's recipe is full

def test_only_the_papers_recipe_trained_to_its_end_is_full():
    import dataclasses

    paper = train_config("nondoubling", "full")
    assert run_scale(paper, 100_000) == "full"
    assert run_scale(paper, 99_999) == "custom"
    assert run_scale(dataclasses.replace(paper, pool_size=0), 100_000) == "custom"
    doubling = train_config("doubling", "full")
    for change in [dict(learning_rate=1e-3), dict(clip_norm=1.0), dict(batch_size=64)]:
        assert run_scale(dataclasses.replace(doubling, **change), 100_000) == "custom", change
    laptop = train_config("doubling", "laptop")
    assert run_scale(laptop, laptop.steps) == "laptop"
    assert run_scale(dataclasses.replace(laptop, learning_rate=3e-4), laptop.steps) == "custom"
    assert run_scale(train_config("baseline", "smoke"), 40) == "smoke"


# -------------------------------------------------------------- 8. SIGTERM is not a finished run

def test_a_run_stopped_by_sigterm_says_so_and_exits_143(tmp_path, data_dir):
    run = tmp_path / "run"
    process = subprocess.Popen([str(VNCA), "train", "--model", "baseline", "--profile", "smoke", "--out",
                                str(run), "--steps", "100000", "--batch-size", "4", "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / METRICS).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    step = checkpoint.read_metadata(run / CHECKPOINT)["step"]
    assert 0 < step < 100_000 and "done:" not in out
    assert f"stopped by SIGTERM at step {step:,} of 100,000" in err and "--resume" in err


# ------------------------------------------------------------- 9. log q from the noise, not the sample

class FixedEncoder(eqx.Module):
    mean: jax.Array
    log_scale: jax.Array

    def __call__(self, x):
        return self.mean, self.log_scale


@pytest.mark.parametrize("log_scale", [-18.0, -90.0])
def test_log_q_of_a_sharp_posterior_is_exact(log_scale):
    from vnca.doubling import DoublingConfig, doubling_vnca
    from vnca.vae import bernoulli_log_likelihood, log_importance_weights, normal_log_density

    model = doubling_vnca(DoublingConfig(latent=8, hidden=8, residual_blocks=1), key=jax.random.key(0))
    mean = jnp.linspace(-3.0, 40.0, 8)  # large means: z - mean loses every digit of sigma * noise
    model = eqx.tree_at(lambda m: m.encoder, model, FixedEncoder(mean, jnp.full(8, log_scale)))
    x = (jax.random.uniform(jax.random.key(1), (32, 32)) < 0.2).astype(jnp.float32)
    key = jax.random.key(2)
    got = log_importance_weights(model, x, key, samples=4, chunk=2)
    expected = []
    for k in jax.random.split(key, 4):  # the same draws, with log q written from the noise
        sample_key, decoder_key = jax.random.split(k)
        noise = jax.random.normal(sample_key, (8,))
        z = mean + jnp.exp(log_scale) * noise
        log_q = jnp.sum(-0.5 * noise**2 - log_scale - 0.5 * np.log(2 * np.pi))
        expected.append(bernoulli_log_likelihood(model.decoder(z, key=decoder_key), x) + normal_log_density(z)
                        - log_q)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5, atol=1e-3)


# ------------------------------------------------------------------------------- 10. smaller ones

def test_tsne_images_below_the_minimum_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["figures", "doubling-laptop", "--out", str(tmp_path), "--tsne-images", "1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--tsne-images" in err and "at least 10" in err


def test_first_of_digits_is_the_first():
    from vnca.figures import first_of_digits

    labels = np.array([3, 1, 7, 1, 3, 7, 0])
    assert first_of_digits(labels, [1, 7, 3, 0]) == [1, 2, 0, 6]
    with pytest.raises(ValueError, match=r"no image is labelled \[9\]"):
        first_of_digits(labels, [1, 9])


def test_an_atomically_written_file_has_the_mode_a_plain_write_gives(tmp_path):
    # mkstemp's files are private (0600): a record written that way was unreadable to others
    (tmp_path / "plain.json").write_text("{}")
    files_module.atomic_write(tmp_path / "atomic.json", b"{}")
    mode = (tmp_path / "atomic.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777
    old = os.umask(0o077)  # and it follows the umask, as open() does
    try:
        files_module.atomic_write(tmp_path / "private.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600

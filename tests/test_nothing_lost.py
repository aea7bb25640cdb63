"""Nothing lost, round two (issue 38): each test reproduces one case in which a command destroyed a
user's file, was silently wrong, or ended in a traceback, and checks the general rule that fixes it.
The numbers in the section titles are the issue's. Cheap by design: the runs here are checkpoints of
untrained tiny models, written without training, and the heavy work of a command is replaced by a
stand-in wherever a test is about what happens before it."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vnca.cli
import vnca.files
import vnca.evaluate
import vnca.live
import vnca.train
from conftest import VNCA, vnca_command
from vnca import checkpoint, pretrained
from vnca import data as D
from vnca import files as files_module
from vnca.checkpoint import CheckpointError
from vnca.cli import main
from vnca.doubling import DoublingConfig
from vnca.recipes import TrainConfig, train_config
from vnca.runs import CHECKPOINT, METRICS, load_run, metadata
from vnca.step import init_state
from vnca.train import fit

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(**overrides) -> TrainConfig:
    base = dict(model_config=DoublingConfig(latent=4, hidden=4, residual_blocks=1, doublings=2,
                                            steps_per_doubling=1, encoder_width=2),
                steps=10, steps_per_call=2, log_every=2, checkpoint_every=2, batch_size=4)
    return train_config("doubling", "smoke", **{**base, **overrides})


def tiny_run(folder: Path, *, step=10, poison=None, config=None, meta=None) -> Path:
    """A run folder whose checkpoint holds an untrained tiny model at `step`; `poison` (nan or inf)
    goes into one weight; `meta` replaces the header."""
    config = config or tiny_config()
    state = init_state(config)
    state = eqx.tree_at(lambda s: s.step, state, jnp.asarray(step, jnp.int32))
    if poison is not None:
        bias = state.model.decoder.rule.output.bias
        state = eqx.tree_at(lambda s: s.model.decoder.rule.output.bias, state, bias.at[0].set(poison))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save(folder / CHECKPOINT, state, metadata(config, step) if meta is None else meta)
    (folder / "config.json").write_text(json.dumps(config.to_json()))
    return folder


def listing(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_work(monkeypatch):
    """The commands' heavy work replaced: reaching it fails the test (it should have been refused
    before), or, with `allow`, returns a stand-in."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the command started its work instead of refusing")

    monkeypatch.setattr(vnca.cli, "evaluate_model", refuse)
    monkeypatch.setattr(vnca.cli, "export_for_browser", refuse)
    monkeypatch.setattr(vnca.cli, "fit", refuse)
    return calls


@pytest.fixture(scope="module")
def data(data_dir):
    full = D.load_binarized_mnist()
    return D.BinarizedMNIST(train=full.train[:64], test=full.test[:16])


# ------------------------------------------------------------------- 1. outputs that exist are kept

def test_evaluate_never_replaces_an_existing_file_unless_forced(tmp_path, no_work, capsys, monkeypatch):
    run = tiny_run(tmp_path / "d1")
    before = listing(run)
    for out in (run / CHECKPOINT, run / "config.json"):  # the issue's: 395 bytes of JSON over a checkpoint
        assert main(["evaluate", str(run), "--images", "2", "--samples", "2", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert str(out) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert listing(run) == before
    # asked to, it replaces a file (not the checkpoint it evaluates)
    record = {"model": "doubling", "scale": "custom", "log_likelihood": -80.0, "standard_error": 1.0,
              "images": 2, "samples": 2}
    monkeypatch.setattr(vnca.cli, "evaluate_model", lambda *a, **k: record)
    (tmp_path / "old.json").write_text("mine")
    assert main(["evaluate", str(run), "--out", str(tmp_path / "old.json")]) == 2
    assert (tmp_path / "old.json").read_text() == "mine"
    assert main(["evaluate", str(run), "--out", str(tmp_path / "old.json"), "--force"]) == 0
    assert json.loads((tmp_path / "old.json").read_text())["log_likelihood"] == -80.0
    assert main(["evaluate", str(run), "--out", str(run / CHECKPOINT), "--force"]) == 2
    assert listing(run) == before


def test_export_web_never_replaces_an_existing_file_unless_forced(tmp_path, no_work, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("my notes")
    assert main(["export-web", "doubling-laptop", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err and out.read_text() == "my notes"


def test_figures_never_replace_existing_pngs_unless_forced(tmp_path):
    from vnca.figures import make_figures

    model = init_state(tiny_config()).model
    (tmp_path / "samples.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="samples.png.*--force"):
        make_figures(model, "doubling", tmp_path, None, None, jax.random.key(0), force=False)
    assert (tmp_path / "samples.png").read_bytes() == b"mine"


# ------------------------------------------------------- 2. a new run needs a folder of its own

def test_a_new_run_refuses_a_folder_holding_other_files(tmp_path, data):
    p = tmp_path / "p"
    p.mkdir()
    (p / "config.json").write_text('{"my":1}')
    (p / METRICS).write_text("x\n")
    before = listing(p)
    with pytest.raises(FileExistsError, match=r"not this run's \(config.json, metrics.jsonl\).*--force"):
        fit(tiny_config(steps=2), p, data=data, progress=False)
    assert listing(p) == before
    for other in ("notes.txt", "checkpoint.vnca.bak"):  # think --out .
        q = tmp_path / other.replace(".", "-")
        q.mkdir()
        (q / other).write_text("mine")
        with pytest.raises(FileExistsError, match=other):
            fit(tiny_config(steps=2), q, data=data, progress=False)
        assert listing(q) == {other: b"mine"}


def test_a_new_run_may_restart_an_earlier_start_of_itself(tmp_path):
    from vnca.runs import check_run_folder

    config = tiny_config()
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))  # killed before its checkpoint
    (tmp_path / METRICS).write_text('{"step": 2}\n')
    check_run_folder(tmp_path, dataclasses.replace(config, steps=20), resume=False, force=False)
    other = dataclasses.replace(config, learning_rate=0.5)
    with pytest.raises(FileExistsError, match="not this run's"):
        check_run_folder(tmp_path, other, resume=False, force=False)
    check_run_folder(tmp_path, other, resume=False, force=True)  # told to


# --------------------------------------------------------------- 3. one writer per run folder

HOLDER = """
import sys, time
from pathlib import Path
from vnca.runs import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_process_that_holds_the_run(tmp_path, data, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from vnca.runs import RunInUse

        with pytest.raises(RunInUse, match=rf"in use by process {holder.pid} .*wait for it"):
            fit(tiny_config(steps=2), run, data=data, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".vnca.lock"]  # nothing written beside it
        status = main(["train", "--model", "doubling", "--profile", "smoke", "--out", str(run), "--no-progress",
                       "--data-dir", os.environ.get("VNCA_DATA_DIR", "")] if os.environ.get("VNCA_DATA_DIR")
                      else ["train", "--model", "doubling", "--profile", "smoke", "--out", str(run), "--no-progress"])
        err = capsys.readouterr().err
        assert status == 2 and f"process {holder.pid}" in err and len(err.strip().splitlines()) == 1, err
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays, the lock does not
        holder.wait()
    assert (run / ".vnca.lock").exists()
    from vnca.runs import run_lock

    with run_lock(run):  # a stale lock file is taken over
        assert str(os.getpid()) in (run / ".vnca.lock").read_text()
    assert not (run / ".vnca.lock").exists()  # and released with its file


# ------------------------------------------------------------------ 4. NaN or infinite weights

@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_model_with_non_finite_weights_is_refused_everywhere(tmp_path, data, capsys, poison):
    run = tiny_run(tmp_path / "bad", poison=poison)
    before = listing(run)
    assert main(["evaluate", str(run), "--images", "2", "--samples", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and str(run / CHECKPOINT) in err and "Traceback" not in err, err
    assert main(["figures", str(run), "--out", str(tmp_path / "figs"), "--tsne-images", "10"]) == 2
    assert "NaN or infinite" in capsys.readouterr().err and not (tmp_path / "figs").exists()
    with pytest.raises(CheckpointError, match="NaN or infinite") as caught:
        fit(tiny_config(steps=12), run, data=data, progress=False, resume=True)
    assert "last good" not in str(caught.value)
    assert listing(run) == before


def test_a_record_with_a_number_that_is_not_finite_is_not_written(tmp_path):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="log_likelihood is NaN or infinite"):
            vnca.files.write_record({"model": "doubling", "log_likelihood": bad}, tmp_path / "r.json")
        assert not list(tmp_path.iterdir())


# -------------------------------------------------------------------- 5. checkpoint headers

def test_a_shipped_models_file_is_evaluated_by_its_path(tmp_path):
    model, config, step, source = pretrained.resolve(pretrained.WEIGHTS / "doubling-laptop.vnca")
    entry = pretrained.manifest()["doubling-laptop"]
    assert config.model == "doubling" and step == entry["step"]
    shipped = pretrained.load("doubling-laptop")
    for a, b in zip(jax.tree.leaves(eqx.filter(model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(shipped, eqx.is_array))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change, message", [
    (lambda m: {k: v for k, v in m.items() if k != "config"}, "holds no run configuration"),
    (lambda m: {**m, "config": {**m["config"], "model": "tripling"}}, "unknown model 'tripling'"),
    (lambda m: {**m, "config": {**m["config"], "model_config": {**m["config"]["model_config"], "latent": 0}}},
     "no model this version of vnca can build"),
    (lambda m: {**m, "config": {**m["config"], "model_config": {"lattent": 4}}}, "lattent"),
    (lambda m: {**m, "config": {**m["config"], "seed": -1}}, "seed must be"),
])
def test_a_checkpoint_header_that_describes_no_model_is_one_clear_error(tmp_path, capsys, change, message):
    config = tiny_config()
    run = tiny_run(tmp_path / "run", meta=change(metadata(config, 10)))
    with pytest.raises(CheckpointError, match=message):
        load_run(run / CHECKPOINT)
    assert main(["evaluate", str(run), "--images", "2", "--samples", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(run / CHECKPOINT) in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------ 8, 9, 10. bounded resources

@pytest.mark.parametrize("argv, option", [
    (["evaluate", "doubling-laptop", "--images", "2", "--samples", "100000000"], "--samples"),
    (["evaluate", "doubling-laptop", "--seed", "-3"], "--seed"),
    (["evaluate", "doubling-laptop", "--seed", "99999999999999999999999"], "--seed"),
    (["figures", "doubling-laptop", "--out", "figs", "--seed", "99999999999999999999999"], "--seed"),
    (["train", "--model", "doubling", "--profile", "smoke", "--out", "run", "--seed", "99999999999999999999999"],
     "--seed"),
    (["train", "--model", "doubling", "--profile", "smoke", "--out", "run", "--seed", "-1"], "--seed"),
    (["train", "--model", "doubling", "--profile", "smoke", "--out", "run", "--batch-size", "1000000"],
     "--batch-size"),
    (["train", "--model", "nondoubling", "--profile", "smoke", "--out", "run", "--pool-size", "1000000000"],
     "--pool-size"),
    (["evaluate", "doubling-laptop", "--images", "2", "--batch-size", "1000000000"], "--batch-size"),
    (["export-web", "doubling-laptop", "--out", "x.vncaweb", "--examples", "-1"], "--examples"),
    (["export-web", "doubling-laptop", "--out", "x.vncaweb", "--examples", "0"], "--examples"),
    (["export-web", "doubling-laptop", "--out", "x.vncaweb", "--examples", "20000"], "--examples"),
])
def test_options_beyond_their_limits_are_refused_naming_the_option_and_why(tmp_path, monkeypatch, no_work,
                                                                            capsys, argv, option):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be a whole number of at least" in err and "(" in err.splitlines()[-1], err
    assert not list(tmp_path.iterdir())  # no folder, no file


@pytest.mark.parametrize("images, message", [("20000", "between 1 and 10000"),
                                             ("1", "at least 2: a standard error needs two")])
def test_images_beyond_the_test_set_or_without_a_standard_error_are_refused_before_work(
        tmp_path, monkeypatch, no_work, capsys, images, message):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "doubling-laptop", "--images", images]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_the_python_functions_check_the_same_limits(tmp_path, data):
    with pytest.raises(ValueError, match="seed must be"):
        tiny_config(seed=2**64)
    for examples in (0, 20_000):
        with pytest.raises(ValueError, match="examples must be from 1"):
            vnca.live.export_for_browser("doubling-laptop", tmp_path / "x.vncaweb", examples=examples, data=data)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ 11. the manifest

@pytest.fixture
def weights(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(pretrained.WEIGHTS / "doubling-laptop.vnca", folder)
    models = pretrained.manifest()
    (folder / "manifest.json").write_text(json.dumps({"models": {"doubling-laptop": models["doubling-laptop"]}}))
    return folder


def test_a_damaged_manifest_is_one_clear_error_naming_it(weights):
    path = weights / "manifest.json"
    text = path.read_text()
    pretrained.load("doubling-laptop", weights)  # the copy is good
    entry = json.loads(text)["models"]["doubling-laptop"]
    cases = {
        text[: len(text) // 2]: "not a manifest",  # truncated
        json.dumps({"models": {"doubling-laptop": {k: v for k, v in entry.items() if k != "bytes"}}}): "lacks 'bytes'",
        json.dumps({"models": {"doubling-laptop": {**entry, "file": "../doubling-laptop.vnca"}}}): "outside",
        json.dumps({"models": {"doubling-laptop": {**entry, "file": "/etc/passwd"}}}): "outside",
        json.dumps([1, 2]): "not a manifest",
    }
    for content, message in cases.items():
        path.write_text(content)
        with pytest.raises(pretrained.PretrainedError, match=message) as caught:
            pretrained.load("doubling-laptop", weights)
        assert str(path) in str(caught.value)


# ------------------------------------------------------------------------ 12. the partial file

@pytest.fixture(scope="module")
def of():
    """What a partial file of `vnca evaluate doubling-laptop --images 2 --samples 2` is of."""
    import hashlib

    rows = np.sort(np.random.default_rng(0).choice(10_000, 2, replace=False))
    return json.dumps({"weights": vnca.evaluate.weights_checksum(pretrained.load("doubling-laptop")), "seed": 0,
                       "samples": 2, "rows": hashlib.sha256(rows.astype(np.int64).tobytes()).hexdigest()})


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "{", '{"of": OF, "bounds": "abc", "seconds": 0.0}',
                                     '{"of": OF, "bounds": [NaN], "seconds": 0.0}',
                                     '{"of": OF, "bounds": [-90.5], "seconds": "1"}'])
def test_an_unusable_partial_file_is_named_with_what_to_do(tmp_path, capsys, of, content):
    out = tmp_path / "r.json"
    partial = tmp_path / "r.json.partial"
    content = content.replace("OF", of)  # of this very evaluation: only its contents are wrong
    partial.write_text(content)
    status = main(["evaluate", "doubling-laptop", "--images", "2", "--samples", "2", "--out", str(out),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and str(partial) in err and "delete it" in err and "Traceback" not in err, err
    assert partial.read_text() == content and not out.exists()


# -------------------------------------------------------------- 13. resuming past the end

def test_resuming_with_fewer_steps_than_done_is_refused_and_changes_nothing(tmp_path, data):
    run = tiny_run(tmp_path / "d1", step=10)
    before = listing(run)
    with pytest.raises(ValueError, match="at step 10, past the 5 steps"):
        fit(tiny_config(steps=5), run, data=data, progress=False, resume=True)
    assert listing(run) == before  # config.json still says 10 steps


# ----------------------------------------------------------------------------- 14. smaller ones

@pytest.mark.parametrize("value", ["0", "abc", "-2", "100000"])
def test_a_bad_device_count_is_one_line(value, tmp_path):
    done = subprocess.run([str(VNCA), "evaluate", "doubling-laptop", "--images", "2"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_NUM_CPU_DEVICES": value}, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "JAX_NUM_CPU_DEVICES" in done.stderr
    assert not list(tmp_path.iterdir())


def test_export_web_explains_os_errors_naming_the_file_asked_for(tmp_path, no_work, capsys):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "m.vncaweb"
    assert main(["export-web", "doubling-laptop", "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert "a file, where a folder is needed" in err and str(out) in err and "[Errno" not in err, err


def test_a_failed_temporary_file_is_reported_as_the_file_asked_for(tmp_path, monkeypatch):
    import errno
    import tempfile

    def refused(dir, prefix, suffix):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), f"{dir}/{prefix}abc{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as caught:
        files_module.atomic_write(tmp_path / "record.json", b"{}")
    assert caught.value.filename == str(tmp_path / "record.json")
    assert "no permission" in files_module.explain(caught.value) and ".part" not in files_module.explain(caught.value)


def test_a_failed_new_run_leaves_nothing_behind(tmp_path, data, monkeypatch):
    import vnca.train

    def broken(config):
        raise ValueError("cannot build this model")

    monkeypatch.setattr(vnca.train, "init_state", broken)
    with pytest.raises(ValueError, match="cannot build"):
        fit(tiny_config(steps=2), tmp_path / "new", data=data, progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder it did not make stays, empty
    with pytest.raises(ValueError, match="cannot build"):
        fit(tiny_config(steps=2), tmp_path / "kept", data=data, progress=False)
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())


def test_a_folder_named_like_the_checkpoint_is_called_a_folder(tmp_path, data):
    (tmp_path / CHECKPOINT).mkdir()
    for resume in (False, True):
        with pytest.raises(FileExistsError, match="is a folder, not a checkpoint file"):
            fit(tiny_config(steps=2), tmp_path, data=data, progress=False, resume=resume)

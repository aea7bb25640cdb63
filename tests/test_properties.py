"""Properties, not cases (issue 38): the command line's argument handling, and every file reader against
mutated files. Whatever a careless user types or a damaged disk holds, no traceback escapes (only the
error a reader documents, naming the file, or argparse's usage error) and nothing is left behind.
Cheap: the commands' heavy work is replaced by a stand-in that checks the arguments that reach it, and
the files are small; Hypothesis runs a few dozen examples of each, derandomised, so CI is stable."""

import json
import types
import math
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vnca.cli
import vnca.data
import vnca.evaluate
import vnca.figures
import vnca.labels
import vnca.live
import vnca.pretrained
import vnca.train
from vnca import checkpoint
from vnca.checkpoint import CheckpointError
from vnca.cli import main
from vnca.doubling import DoublingConfig
from vnca.live import BrowserFileError, read_browser_file, write_browser_file
from vnca.pretrained import PretrainedError
from vnca.recipes import MAX_SEED, train_config
from vnca.runs import CHECKPOINT, load_run, metadata
from vnca.step import init_state

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def listing(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ the command line

class Reached(Exception):
    """The command's heavy work was reached: the arguments passed every check."""


def _tiny_model():
    config = train_config("doubling", "smoke", model_config=DoublingConfig(
        latent=4, hidden=4, residual_blocks=1, doublings=2, steps_per_doubling=1, encoder_width=2))
    return init_state(config).model, config


@pytest.fixture
def stand_ins(monkeypatch):
    """Every command's work replaced by a check of what reaches it."""
    model, config = _tiny_model()

    def resolve(name):
        if str(name) != "doubling-laptop":
            raise PretrainedError(f"{name}: no such run or checkpoint, and no shipped model of that name")
        return model, config, 10, "shipped model doubling-laptop"

    def evaluate_model(model, config, step, source, *, samples, images, seed, chunk, batch_size, **_):
        assert 1 <= samples <= vnca.cli.MAX_SAMPLES and 0 <= seed <= MAX_SEED
        assert chunk is None or chunk >= 1 and batch_size is None or batch_size >= 1
        raise Reached

    def export_for_browser(name, path, *, examples, **_):
        assert 1 <= examples <= vnca.live.MAX_EXAMPLES
        raise Reached

    def fit(config, out, **_):
        assert 0 <= config.seed <= MAX_SEED and config.steps >= 1 and config.batch_size >= 1
        raise Reached

    def make_figures(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(vnca.pretrained, "resolve", resolve)
    for module in (vnca.evaluate, vnca.live, vnca.cli, vnca.data):
        monkeypatch.setattr(module, "load_binarized_mnist", lambda *a, **k: None)
    monkeypatch.setattr(vnca.labels, "recover_labels", lambda *a, **k: types.SimpleNamespace(digit=None))
    monkeypatch.setattr(vnca.cli, "evaluate_model", evaluate_model)
    monkeypatch.setattr(vnca.cli, "export_for_browser", export_for_browser)
    monkeypatch.setattr(vnca.cli, "fit", fit)
    monkeypatch.setattr(vnca.cli, "make_figures", make_figures)


NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["0", "1", "2", "-1", "-3", "8", "10000", "10001", "100000", "100001", str(MAX_SEED),
                     str(MAX_SEED + 1), str(2**64), "1e9", "nan", "inf", "-inf", "0.5", "abc", "", " 7"]),
    st.text(max_size=6),
)
OPTIONS = {
    "evaluate": ["--samples", "--images", "--seed", "--chunk", "--batch-size"],
    "export-web": ["--examples"],
    "train": ["--steps", "--batch-size", "--seed", "--steps-per-call", "--pool-size", "--update-probability",
              "--state-penalty", "--decoder-first", "--kl-warmup"],
    "figures": ["--seed", "--tsne-images"],
}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    name = draw(st.sampled_from(["doubling-laptop", "no-such-model"]))
    argv = {"evaluate": ["evaluate", name, "--out", "r.json"],
            "export-web": ["export-web", name, "--out", "m.vncaweb"],
            "train": ["train", "--model", draw(st.sampled_from(["baseline", "doubling", "nondoubling"])),
                      "--profile", draw(st.sampled_from(["smoke", "laptop", "full"])), "--out", "run"],
            "figures": ["figures", name, "--out", "figs"]}[command]
    for option in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4, unique=True)):
        argv += [f"{option}={draw(NUMBERS)}"]
    if draw(st.booleans()):
        argv.append("--force")
    return argv


@settings(SETTINGS, max_examples=80)
@given(argv=command_lines())
def test_no_command_line_ends_in_a_traceback_or_leaves_anything(tmp_path, monkeypatch, stand_ins, capsys, argv):
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse: a usage error, naming the option
        assert stop.code == 2
        assert "error: argument" in capsys.readouterr().err
    except Reached:
        pass
    else:
        assert status in (2, 3, 4)  # the stand-ins never let a command finish
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error:" in err, err
    assert listing(tmp_path) == before


# ---------------------------------------------------------------------------- mutated files

@st.composite
def mutations(draw, size: int):
    """A list of byte edits of a file of `size` bytes: flips, cuts, insertions."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        at = draw(st.integers(0, max(size - 1, 0)))
        if kind == "flip":
            edits.append(("flip", at, draw(st.integers(1, 255))))
        elif kind == "cut":
            edits.append(("cut", at, draw(st.integers(1, 64))))
        elif kind == "insert":
            edits.append(("insert", at, draw(st.binary(min_size=1, max_size=16))))
        else:
            edits.append(("set", at, draw(st.sampled_from([b"0", b"-", b"\x00", b"{", b"]", b"9" * 30, b"NaN"]))))
    return edits


def mutate(raw: bytes, edits) -> bytes:
    raw = bytearray(raw)
    for kind, at, what in edits:
        at = min(at, max(len(raw) - 1, 0))
        if not raw:
            break
        if kind == "flip":
            raw[at] ^= what
        elif kind == "cut":
            del raw[at : at + what]
        elif kind == "insert":
            raw[at:at] = what
        else:
            raw[at : at + len(what)] = what
    return bytes(raw)


def check_reader(path: Path, raw: bytes, read, errors, names=None):
    """`read(path)` of the mutated file returns, or raises one of `errors` in one line naming the file
    (or what `names` accepts); and leaves the folder as it was."""
    path.write_bytes(raw)
    before = listing(path.parent)
    try:
        read(path)
    except errors as err:
        assert (names or (lambda m: str(path) in m))(str(err)) and "\n" not in str(err), err
    assert listing(path.parent) == before


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """The bytes of a tiny run's checkpoint (near the front: its header, where mutations matter)."""
    model, config = _tiny_model()
    path = tmp_path_factory.mktemp("ck") / CHECKPOINT
    checkpoint.save(path, init_state(config), metadata(config, 10))
    return path.read_bytes()


HEAD = 2_000  # edits within the magic, the header and the first arrays


@SETTINGS
@given(edits=mutations(HEAD))
def test_a_mutated_checkpoint_is_loaded_unchanged_or_refused_in_one_line(tmp_path, tiny_checkpoint, edits):
    check_reader(tmp_path / CHECKPOINT, mutate(tiny_checkpoint, edits), load_run, CheckpointError)


@SETTINGS
@given(edits=mutations(HEAD))
def test_a_mutated_checkpoint_given_to_a_command_is_refused_in_one_line(tmp_path, tiny_checkpoint, edits):
    from vnca.pretrained import resolve

    check_reader(tmp_path / CHECKPOINT, mutate(tiny_checkpoint, edits), resolve,
                 (CheckpointError, PretrainedError))


@pytest.fixture(scope="module")
def tiny_state():
    model, config = _tiny_model()
    return init_state(config), config


CONFIG_FIELDS = ["model", "model_config", "batch_size", "learning_rate", "steps", "steps_per_call", "seed",
                 "pool_size", "state_penalty", "damage", "encoder_from", "decoder_first", "kl_warmup"]
MODEL_FIELDS = ["latent", "hidden", "residual_blocks", "doublings", "steps_per_doubling", "update_probability",
                "encoder_width"]


@SETTINGS
@given(field=st.sampled_from(CONFIG_FIELDS + MODEL_FIELDS + [None]), value=st.one_of(
    st.integers(-3, 3), st.sampled_from([0, 10**30, 2**64, -(2**40), 0.5, float("nan"), float("inf"), "x", "",
                                         None, True, [], {}]), st.text(max_size=4)))
def test_a_checkpoint_header_changed_under_a_valid_checksum_is_checked_too(tmp_path, tiny_state, field, value):
    """The checksums say the header is what was written, not that it describes a model: a header written
    by hand (or by another program) is checked before a model is built from it."""
    state, config = tiny_state
    meta = metadata(config, 10)
    if field in MODEL_FIELDS:
        meta["config"]["model_config"][field] = value
    elif field is not None:
        meta["config"][field] = value
    else:
        del meta["config"]
    path = tmp_path / CHECKPOINT
    checkpoint.save(path, state, meta)
    try:
        load_run(path)
    except CheckpointError as err:
        assert str(path) in str(err) and "\n" not in str(err), err


@pytest.fixture(scope="module")
def browser_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("web") / "m.vncaweb"
    write_browser_file(path, {"rule.a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)},
                       {"name": "m", "decoder": {"kind": "doubling", "hidden": 4, "steps_per_doubling": 8}})
    return path.read_bytes()


@SETTINGS
@given(edits=mutations(200))
def test_a_mutated_browser_file_is_refused_header_and_values_alike(tmp_path, browser_file, edits):
    raw = mutate(browser_file, edits)
    path = tmp_path / "m.vncaweb"
    check_reader(path, raw, read_browser_file, BrowserFileError)
    if raw != browser_file:  # the checksum covers every byte: any change is refused
        with pytest.raises(BrowserFileError):
            read_browser_file(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A weights folder with one tiny shipped model, as `ship` writes it."""
    folder = tmp_path_factory.mktemp("weights")
    model, config = _tiny_model()
    checkpoint.save(folder / "tiny.vnca", model, {"name": "tiny", "recipe": config.to_json(), "step": 10,
                                                   "dtype": "float32"})
    raw = (folder / "tiny.vnca").read_bytes()
    import hashlib

    entry = {"name": "tiny", "file": "tiny.vnca", "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
             "dtype": "float32", "model": "doubling", "recipe": config.to_json(), "step": 10,
             "evaluation": {"log_likelihood": -100.0}}
    (folder / "manifest.json").write_text(json.dumps({"models": {"tiny": entry}}, indent=1))
    vnca.pretrained.load("tiny", folder)  # good as written
    return folder


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=3), max_leaves=6)


@SETTINGS
@given(edits=mutations(600), field=st.sampled_from(["file", "bytes", "sha256", "dtype", "model", "recipe", "step",
                                                      "evaluation", None]), value=JSON)
def test_a_mutated_manifest_is_refused_in_one_line_naming_it(weights, edits, field, value):
    path = weights / "manifest.json"
    good = path.read_bytes()
    try:
        if field is None:
            raw = mutate(good, edits)
        else:  # a well-formed manifest with one field's value replaced
            manifest = json.loads(good)
            manifest["models"]["tiny"][field] = value
            raw = json.dumps(manifest).encode()
        # the manifest or the weight file it names, or the name asked for is not in it
        names = lambda m: str(weights) in m or m.startswith("no shipped model named 'tiny'")  # noqa: E731
        check_reader(path, raw, lambda p: vnca.pretrained.load("tiny", p.parent), (PretrainedError, CheckpointError),
                     names)
    finally:
        path.write_bytes(good)


@SETTINGS
@given(edits=mutations(120), bounds=st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers()
                                             | st.text(max_size=3) | st.none(), max_size=4))
def test_a_mutated_partial_file_is_resumed_from_only_if_it_is_sound(tmp_path, edits, bounds):
    from vnca.evaluate import read_partial

    good = json.dumps({"of": {"weights": "ab", "seed": 0, "samples": 2, "rows": "cd"}, "bounds": [-80.5, -90.25],
                       "seconds": 1.5}).encode()
    for raw in (mutate(good, edits), json.dumps({"of": {}, "bounds": bounds, "seconds": 0.0}).encode()):
        path = tmp_path / "r.json.partial"
        path.write_bytes(raw)
        try:
            saved = read_partial(path)
        except ValueError as err:
            assert str(path) in str(err) and "delete it" in str(err)
        else:  # what is resumed from is sound
            assert all(isinstance(b, float) and math.isfinite(b) for b in saved["bounds"])

"""The laptop-scale models shipped with the package: recipes, verified loading, their records."""

import dataclasses
import json
import shutil
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, vnca_command
from vnca import pretrained
from vnca.baseline import ConvDecoder
from vnca.doubling import DoublingDecoder
from vnca.evaluate import image_bounds
from vnca.nondoubling import NonDoublingDecoder
from vnca.recipes import LAPTOP_RUNS, TrainConfig, train_config
from vnca.step import init_state

SHIPPED = ["baseline-laptop", "doubling-laptop", "nondoubling-laptop"]
# The pool chapter's ablations: the non-doubling laptop recipe less one ingredient.
ABLATIONS = {
    "nondoubling-laptop-nodamage": ("a pool without damage", {"damage": False}),
    "nondoubling-laptop-nopool": ("no pool", {"pool_size": 0, "state_penalty": 0.0}),
}


def test_laptop_recipes_keep_the_papers_structure():
    for model in LAPTOP_RUNS:
        config = train_config(model, "laptop")  # validated by TrainConfig itself
        assert config.model == model and config.steps >= 1_000 and 1e-4 <= config.learning_rate <= 1e-3
        state = init_state(config)
        decoder = state.model.decoder
        if model == "doubling":
            assert isinstance(decoder, DoublingDecoder)
            assert (decoder.config.doublings, decoder.config.steps_per_doubling) == (5, 8)  # 1x1 -> 32x32
        elif model == "nondoubling":
            assert isinstance(decoder, NonDoublingDecoder) and decoder.config.side == 32
            assert config.pool_size > 0 and config.batch_size % 4 == 0  # pool rows and damage
            assert decoder.config.min_steps >= decoder.config.side // 2  # the centre hears of the edge
        else:
            assert isinstance(decoder, ConvDecoder) and all(layer.transposed for layer in decoder.upsample)
    with pytest.raises(ValueError, match="smoke, laptop, full"):
        train_config("doubling", "desktop")


def test_the_manifest_lists_the_three_laptop_models_and_the_ablations_with_their_facts():
    assert pretrained.names(ablations=False) == SHIPPED
    assert pretrained.names() == sorted([*SHIPPED, *ABLATIONS])
    total = 0
    for name, entry in pretrained.manifest().items():
        # The recipe as published (fields added to TrainConfig since a model shipped take their defaults).
        recipe = train_config(entry["model"], "laptop")
        if name in ABLATIONS:
            lacks, changes = ABLATIONS[name]
            assert entry["ablation"] == lacks
            recipe = dataclasses.replace(recipe, **changes)
        else:
            assert "ablation" not in entry
        # how many steps a compiled call fused is how a model was computed, not what it learnt: the
        # laptop profile fuses one since these trained with ten (the training chapter)
        recipe = dataclasses.replace(recipe, steps_per_call=entry["recipe"]["steps_per_call"])
        assert TrainConfig.from_json(entry["recipe"]) == recipe
        assert entry["step"] == entry["recipe"]["steps"]
        evaluation = entry["evaluation"]
        assert evaluation["samples"] == 128 and evaluation["images"] >= (500 if name in ABLATIONS else 2_000)
        assert evaluation["log_likelihood"] < 0 and 0 < evaluation["standard_error"] < 3
        record = json.loads((ROOT / "results" / f"{name}.json").read_text())
        # An ablation's record never passes for the laptop recipe's.
        assert record["scale"] == ("custom" if name in ABLATIONS else "laptop")
        assert record["log_likelihood"] == evaluation["log_likelihood"]
        assert 0 < entry["training"]["wall_seconds"] <= 2 * 60 * 60  # the book: "under two hours each"
        assert (ROOT / "results" / "laptop" / name / "metrics.jsonl").is_file()
        assert entry["bytes"] <= 10 * 2**20
        total += entry["bytes"]
    assert total <= 30 * 2**20  # five models, the package stays a small download


@pytest.mark.parametrize("name", [*SHIPPED, *ABLATIONS])
def test_shipped_model_loads_and_its_bound_agrees_with_its_record(name, data_dir):
    from vnca.data import load_binarized_mnist

    model, entry = pretrained.load_with_entry(name)
    assert type(model) is type(init_state(train_config(entry["model"], "laptop")).model)
    e = entry["evaluation"]
    # The record's images: the same random subset `evaluate_model` drew, each sampling from
    # fold_in(key(seed), index), so these are exactly 16 of the bounds the record averaged.
    rows = np.sort(np.random.default_rng(e["seed"]).choice(e["test_images"], e["images"], replace=False))[:16]
    test = load_binarized_mnist().test
    bounds = image_bounds(model, test[rows], jax.random.key(e["seed"]), samples=128, indices=rows)
    spread = e["standard_error"] * np.sqrt(e["images"])  # the per-image standard deviation
    assert abs(bounds.mean() - e["log_likelihood"]) < 4 * spread / np.sqrt(len(rows)), (bounds.mean(), e)


@pytest.fixture
def copied(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS, folder)
    return folder


def test_a_changed_byte_is_refused(copied):
    path = copied / "doubling-laptop.vnca"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(pretrained.PretrainedError, match="doubling-laptop.vnca.*SHA-256"):
        pretrained.load("doubling-laptop", folder=copied)
    assert pretrained.load("baseline-laptop", folder=copied) is not None  # the others still load


def test_a_truncated_or_missing_file_is_refused(copied):
    path = copied / "baseline-laptop.vnca"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(pretrained.PretrainedError, match="baseline-laptop.vnca.*does not match"):
        pretrained.load("baseline-laptop", folder=copied)
    path.unlink()
    with pytest.raises(pretrained.PretrainedError, match="baseline-laptop.vnca: the weight file .* missing"):
        pretrained.load("baseline-laptop", folder=copied)


def test_a_file_that_matches_its_checksum_but_not_its_recipe_is_refused(copied):
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["models"]["doubling-laptop"]["recipe"]["model_config"]["hidden"] = 64
    (copied / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(pretrained.PretrainedError, match="recipe in the file is not the manifest's"):
        pretrained.load("doubling-laptop", folder=copied)


def test_another_models_file_under_a_name_is_refused(copied):
    manifest = json.loads((copied / "manifest.json").read_text())
    entry = manifest["models"]["doubling-laptop"]
    other = manifest["models"]["baseline-laptop"]
    entry.update(file=other["file"], bytes=other["bytes"], sha256=other["sha256"])
    (copied / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(pretrained.PretrainedError, match="recipe in the file is not the manifest's"):
        pretrained.load("doubling-laptop", folder=copied)


def test_unknown_names_and_a_missing_manifest_say_what_there_is(copied):
    with pytest.raises(pretrained.PretrainedError, match="no shipped model named 'doubling'.*doubling-laptop"):
        pretrained.load("doubling", folder=copied)
    (copied / "manifest.json").unlink()
    with pytest.raises(pretrained.PretrainedError, match="no manifest"):
        pretrained.load("doubling-laptop", folder=copied)


def test_commands_take_a_shipped_name(tmp_path, data_dir):
    out = tmp_path / "record.json"
    done = vnca_command("evaluate", "baseline-laptop", "--images", "8", "--samples", "4", "--out", out,
                        "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["model"] == "baseline" and record["scale"] == "laptop" and record["images"] == 8
    assert record["checkpoint"] == "shipped model baseline-laptop"
    wrong = vnca_command("evaluate", "doubling-desktop", "--images", "8")
    assert wrong.returncode == 2 and "no shipped model of that name" in wrong.stderr


def test_a_new_evaluation_replaces_the_shipped_one_and_nothing_else(copied):
    before = pretrained.manifest(copied)
    record = {"model": "doubling", "step": before["doubling-laptop"]["step"], "log_likelihood": -100.5,
              "standard_error": 0.25, "images": 10_000, "samples": 128, "seed": 0, "test_images": 10_000,
              "seconds": 1.0}
    entry = pretrained.record_evaluation("doubling-laptop", record, folder=copied)
    after = pretrained.manifest(copied)
    assert after["doubling-laptop"] == entry
    assert entry["evaluation"] == {k: record[k] for k in pretrained.EVALUATION_KEYS}
    assert {k: v for k, v in entry.items() if k != "evaluation"} == {
        k: v for k, v in before["doubling-laptop"].items() if k != "evaluation"}
    assert after["baseline-laptop"] == before["baseline-laptop"]
    assert pretrained.load("doubling-laptop", folder=copied) is not None  # the weights still verify
    with pytest.raises(pretrained.PretrainedError, match="is of doubling at step 3"):
        pretrained.record_evaluation("doubling-laptop", {**record, "step": 3}, folder=copied)
    with pytest.raises(pretrained.PretrainedError, match="is of baseline"):
        pretrained.record_evaluation("doubling-laptop", {**record, "model": "baseline"}, folder=copied)
    with pytest.raises(pretrained.PretrainedError, match="no shipped model 'x'"):
        pretrained.record_evaluation("x", record, folder=copied)


def test_the_training_tool_does_not_ship_a_shipped_model_again(copied):
    """`tools/laptop_models.py`, run again after a stop, skips a model the manifest already holds
    with the same step, record and training facts, so that the entry keeps the commit it was shipped
    at; a new evaluation or a new timing of the same run is shipped."""
    sys.path.insert(0, str(ROOT / "tools"))
    import laptop_models

    shipped = laptop_models.shipped_already
    record = json.loads((ROOT / "results" / "doubling-laptop.json").read_text())
    entry = pretrained.manifest(copied)["doubling-laptop"]
    training = {key: entry["training"][key] for key in ("wall_seconds", "cpus", "processor")}
    assert shipped("doubling-laptop", record, training, folder=copied)
    assert not shipped("doubling-laptop", {**record, "step": record["step"] + 1}, training, copied)
    assert not shipped("doubling-laptop", {**record, "log_likelihood": -90.0}, training, copied)
    assert not shipped("doubling-laptop", record, {**training, "wall_seconds": 1_000.0}, copied)
    assert not shipped("baseline-laptop", record, training, folder=copied)  # not its record
    assert not shipped("new-laptop", record, training, folder=copied)
    (copied / "manifest.json").unlink()
    assert not shipped("doubling-laptop", record, training, folder=copied)


@pytest.mark.parametrize("choice", ["baseline", "doubling", "nondoubling", "nopool", "nodamage"])
def test_the_training_tool_trains_each_model_as_it_was_shipped(choice, monkeypatch, tmp_path):
    """`tools/laptop_models.py CHOICE` runs `vnca train` with the configuration the shipped run
    recorded (results/laptop/NAME/config.json; a field added after the run counts at its default):
    the laptop profile's defaults moved since (one step a call), the shipped runs did not."""
    sys.path.insert(0, str(ROOT / "tools"))
    import laptop_models
    from vnca import cli

    seen = []
    monkeypatch.setattr(cli, "fit", lambda config, out, **kwargs: seen.append(config.to_json()))
    cli.main(["train", "--model", laptop_models.model_of(choice), "--profile", "laptop",
              "--out", str(tmp_path / "run"), "--no-progress", *laptop_models.TRAIN_ARGS.get(choice, [])])
    name = laptop_models.name_of(choice)
    shipped = json.loads((ROOT / "results" / "laptop" / name / "config.json").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    assert seen and seen[0] == {**{k: v for k, v in defaults.items() if k in seen[0]}, **shipped}

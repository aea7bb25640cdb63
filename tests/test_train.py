"""Training: exact resume, sharding, checkpoints, non-finite stops, signals and the command line."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vnca import checkpoint
from vnca.checkpoint import CheckpointError
from vnca.data import BinarizedMNIST
from vnca.recipes import TrainConfig, train_config
from vnca.runs import CHECKPOINT, load_run, read_metrics
from vnca.step import init_state
from vnca.train import NonFiniteError, fit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(data_dir):
    from vnca.data import load_binarized_mnist

    full = load_binarized_mnist()
    return BinarizedMNIST(train=full.train[:512], test=full.test[:64])  # small and quick


def _params(state):
    return jax.tree.leaves(eqx.filter(state.model, eqx.is_inexact_array))


def _config(model="doubling", **overrides):
    base = dict(steps=8, steps_per_call=2, log_every=2, checkpoint_every=4, batch_size=4)
    return train_config(model, "smoke", **{**base, **overrides})


@pytest.mark.parametrize("model, extra", [
    ("doubling", {}), ("nondoubling", {}), ("baseline", {}),
    # the options of the laptop claims' recipes: the learning rate's schedule lives in the
    # optimiser's state, which the checkpoint must carry
    ("nondoubling", dict(final_learning_rate=1e-5, decay_steps=8, detach_pool_kl=True,
                         pool_pattern="SPPD")),
])
def test_resume_continues_bitwise(tmp_path, data, model, extra):
    config = _config(model, **extra)
    straight = fit(config, tmp_path / "straight", data=data, progress=False)
    half = dataclass_replace(config, steps=4)
    fit(half, tmp_path / "resumed", data=data, progress=False)
    resumed = fit(config, tmp_path / "resumed", data=data, progress=False, resume=True)
    assert int(resumed.step) == int(straight.step) == 8
    for a, b in zip(_params(straight), _params(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if model == "nondoubling":  # the pool was saved, restored and goes on as if never stopped
        assert int(resumed.pool.filled.sum()) > 0
        for a, b in zip(jax.tree.leaves(straight.pool), jax.tree.leaves(resumed.pool)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed")]
    assert steps == [2, 4, 6, 8]  # logged once each, across the resume


def test_fit_steps_donate_the_old_state_and_compute_what_train_steps_does(data):
    from vnca.mesh import data_mesh, shard_batches
    from vnca.step import place_state, train_steps, train_steps_in_place

    config, mesh = _config("nondoubling"), data_mesh()  # its pool donated too
    stacked = shard_batches(data.train[:8].reshape(2, 4, 32, 32), mesh)
    kept, donated = (place_state(init_state(config), mesh) for _ in range(2))
    expected, expected_metrics = train_steps(config, kept, stacked, mesh)
    got, metrics = train_steps_in_place(stacked, config, donated, mesh)
    arrays = lambda state: jax.tree.leaves(eqx.filter(state, eqx.is_array))  # noqa: E731
    for a, b in zip(arrays((expected, expected_metrics)), arrays((got, metrics)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(x.is_deleted() for x in arrays(donated))  # its buffers now hold `got`
    assert not any(x.is_deleted() for x in arrays(kept)) and not stacked.is_deleted()


def dataclass_replace(config, **changes):
    import dataclasses
    return dataclasses.replace(config, **changes)


def test_checkpoint_holds_the_whole_state(tmp_path, data):
    config = _config()
    state = fit(config, tmp_path, data=data, progress=False)
    meta = checkpoint.read_metadata(tmp_path / CHECKPOINT)
    assert meta["step"] == meta["data_position"] == 8 and len(meta["prng_key"]) == 2
    assert TrainConfig.from_json(meta["config"]) == config
    loaded, saved = load_run(tmp_path / CHECKPOINT, config)
    assert saved == config and int(loaded.step) == 8
    for a, b in zip(jax.tree.leaves(loaded.opt_state), jax.tree.leaves(state.opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_existing_run_is_not_overwritten_without_resume(tmp_path, data):
    fit(_config(steps=2, checkpoint_every=2), tmp_path, data=data, progress=False)
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(FileExistsError, match="pass resume=True"):
        fit(_config(steps=2, checkpoint_every=2), tmp_path, data=data, progress=False)
    assert (tmp_path / CHECKPOINT).read_bytes() == before


@pytest.fixture
def saved(tmp_path, data):
    config = _config(steps=2, checkpoint_every=2)
    fit(config, tmp_path, data=data, progress=False)
    return tmp_path / CHECKPOINT, config


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-100], "truncated"),
    (lambda b: b[:-10] + bytes(10), "corrupt: the arrays do not match their checksum"),
    (lambda b: b"not a checkpoint at all", "not a vnca checkpoint"),
    (lambda b: b[:30] + b"{{{" + b[33:], "the header is damaged"),
])
def test_damaged_checkpoints_are_refused(saved, damage, message):
    path, config = saved
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_run(path, config)


@pytest.mark.parametrize("other, message", [
    (lambda: _config(steps=2, checkpoint_every=2, batch_size=8), "batch_size: checkpoint has 4, this run 8"),
    (lambda: _config("baseline", steps=2, checkpoint_every=2), "model: checkpoint has 'doubling'"),
    (lambda: _config(steps=2, checkpoint_every=2, learning_rate=1e-3), "learning_rate"),
])
def test_checkpoint_of_another_run_is_refused(saved, data, other, message):
    path, _ = saved
    with pytest.raises(CheckpointError, match=message):
        fit(other(), path.parent, data=data, progress=False, resume=True)


def test_a_run_resumes_with_another_number_of_steps_per_call(tmp_path, data):
    """A run begun with two steps per call (a laptop run begun when the profile fused ten) goes on
    with one: how steps are grouped into calls is not what the run learns."""
    config = _config("baseline")
    fit(dataclass_replace(config, steps=4), tmp_path, data=data, progress=False)
    resumed = fit(dataclass_replace(config, steps_per_call=1), tmp_path, data=data, progress=False, resume=True)
    assert int(resumed.step) == 8
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6, 8]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data):
    config = _config(steps=8, checkpoint_every=4)
    fit(dataclass_replace(config, steps=4), tmp_path, data=data, progress=False)
    good = (tmp_path / CHECKPOINT).read_bytes()
    poisoned = BinarizedMNIST(train=np.full(data.train.shape, np.nan, np.float32), test=data.test)
    with pytest.raises(NonFiniteError, match=r"step 4: the loss or a gradient is not finite"):
        fit(config, tmp_path, data=poisoned, progress=False, resume=True)
    assert (tmp_path / CHECKPOINT).read_bytes() == good
    state, _ = load_run(tmp_path / CHECKPOINT, config)
    assert int(state.step) == 4 and all(bool(jnp.isfinite(p).all()) for p in _params(state))


def test_sigterm_saves_and_stops(tmp_path, data, monkeypatch):
    import vnca.train

    original, calls = vnca.train.train_steps_in_place, []

    def then_terminate(*args):
        result = original(*args)
        calls.append(1)
        if len(calls) == 1:  # as Kaggle or Colab would, after the first call
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    then_terminate.lower = original.lower  # fit compiles a call before making it
    monkeypatch.setattr(vnca.train, "train_steps_in_place", then_terminate)
    config = _config(steps=400, log_every=200, checkpoint_every=200)
    state = fit(config, tmp_path, data=data, progress=False)
    # the call in flight (on a CPU a run's first call is one step: steps_in_call) finished, no other
    # began
    assert int(state.step) == 1 and len(calls) == 1
    assert checkpoint.read_metadata(tmp_path / CHECKPOINT)["step"] == 1
    # logged too, before the first log_every: a run stopped early still has metrics (and a plot)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler was put back


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown model 'vae'"):
        train_config("vae", "smoke")
    with pytest.raises(ValueError, match="unknown profile 'tiny'"):
        train_config("doubling", "tiny")
    with pytest.raises(ValueError, match=r"checkpoint_every \(7\) must be a multiple of steps_per_call \(5\)"):
        train_config("doubling", "smoke", steps_per_call=5, checkpoint_every=7)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        train_config("doubling", "smoke", batch_size=0)


def test_full_profile_is_the_papers():
    for model, batch in [("baseline", 32), ("doubling", 32), ("nondoubling", 128)]:
        c = train_config(model, "full")
        assert (c.batch_size, c.learning_rate, c.clip_norm, c.steps) == (batch, 1e-4, 10.0, 100_000)
        assert c.model_config == type(c.model_config)()


SHARDED = textwrap.dedent("""
    import os, sys, tempfile
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    from vnca.data import BinarizedMNIST, load_binarized_mnist
    from vnca.mesh import data_mesh
    from vnca.recipes import train_config
    from vnca.train import fit
    assert jax.device_count() == 8, jax.devices()
    # Plain gradient steps: Adam divides each gradient element by its own size, so an element whose
    # gradient is rounding noise moves by the full learning rate, one way or the other, on 1 device
    # or 8 (measured: 4.6e-5 apart after 4 steps of 1e-4). With SGD a parameter moves by its
    # gradient, which splitting the batch must not change beyond rounding (measured: 1e-7).
    import optax, vnca.step
    vnca.step.optimiser = lambda learning_rate, clip_norm, *schedule: optax.chain(
        optax.clip_by_global_norm(clip_norm), optax.sgd(1e-3))
    full = load_binarized_mnist()
    data = BinarizedMNIST(train=full.train[:256], test=full.test[:8])
    model = sys.argv[1]
    config = train_config(model, "smoke", steps=4, steps_per_call=2, log_every=2, checkpoint_every=4, batch_size=8)
    one = fit(config, tempfile.mkdtemp(), data=data, progress=False, mesh=data_mesh(jax.devices()[:1]))
    many = fit(config, tempfile.mkdtemp(), data=data, progress=False)
    from vnca.step import init_state
    a, b, start = (jax.device_get(jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array)))
                   for m in (one.model, many.model, init_state(config).model))
    worst = max(float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12)) for x, y in zip(a, b))
    changed = max(float(np.abs(x - y).max()) for x, y in zip(a, start))
    print("relative difference", worst, "trained by", changed)
    assert changed > 1e-3, "training did not move the parameters"
    assert worst < 1e-5, worst
    if model == "nondoubling":
        from jax.sharding import PartitionSpec
        assert config.pool_size and many.pool.states.sharding.spec == PartitionSpec("data"), many.pool.states.sharding
        assert len(many.pool.states.sharding.device_set) == 8
        p1, p8 = (jax.device_get(s.pool) for s in (one, many))
        np.testing.assert_array_equal(p1.filled, p8.filled)
        np.testing.assert_array_equal(p1.targets, p8.targets)
        assert p1.filled.sum() >= config.batch_size, "the pool was not filled"
        pool_worst = float(np.abs(p1.states - p8.states).max() / np.abs(p1.states).max())
        print("pool relative difference", pool_worst)
        assert pool_worst < 1e-5, pool_worst
""")


@pytest.mark.parametrize("model", ["doubling", "nondoubling"])
def test_eight_devices_train_like_one(model, data_dir):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARDED, model], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "relative difference" in result.stdout


def test_command_line(tmp_path, data_dir):
    vnca = Path(sys.executable).parent / "vnca"
    ok = subprocess.run([str(vnca), "train", "--model", "baseline", "--profile", "smoke", "--out",
                         str(tmp_path / "run"), "--steps", "5", "--batch-size", "4", "--no-progress"],
                        capture_output=True, text=True, timeout=900)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"checkpoint.vnca", "config.json",
                                                              "metrics.jsonl", "metrics.png"}
    again = subprocess.run([str(vnca), "train", "--model", "baseline", "--profile", "smoke", "--out",
                            str(tmp_path / "run"), "--steps", "5", "--no-progress"], capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    pooled = subprocess.run([str(vnca), "train", "--model", "nondoubling", "--profile", "smoke", "--out",
                             str(tmp_path / "nd"), "--steps", "5", "--batch-size", "4", "--pool-size", "16",
                             "--update-probability", "0.5", "--state-penalty", "0.25", "--steps-per-call", "5",
                             "--no-progress"],
                            capture_output=True, text=True, timeout=900)
    assert pooled.returncode == 0, pooled.stderr[-3000:]
    saved = TrainConfig.from_json(checkpoint.read_metadata(tmp_path / "nd" / CHECKPOINT)["config"])
    assert (saved.pool_size, saved.model_config.update_probability, saved.state_penalty) == (16, 0.5, 0.25)
    assert saved.steps_per_call == 5  # the smoke profile's is 1
    for bad, message in [(["--model", "gan"], "invalid choice: 'gan'"), (["--steps", "0"], "at least 1"),
                         ([], "required"), (["--update-probability", "0"], "must be in (0, 1]"),
                         (["--update-probability", "0.5"], "the baseline model has no NCA"),
                         (["--remat"], "the baseline model has no NCA"), (["--remat", "yes"], "invalid choice: 'yes'"),
                         (["--pool-size", "64"], "only the non-doubling model trains with a pool"),
                         (["--steps-per-call", "3"], "--steps-per-call 3 must divide the full profile's log_every (100)"),
                         (["--state-penalty", "1"], "state_penalty must be 0, or positive with a pool")]:
        args = ["train", "--model", "baseline", "--out", str(tmp_path / "x")]
        if bad and bad[0] == "--model":
            args = ["train", "--out", str(tmp_path / "x")]
        if not bad:
            args = ["train"]
        result = subprocess.run([str(vnca), *args, *bad], capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_decoder_first_freezes_the_encoder_then_trains_everything(tmp_path, data):
    config = _config("nondoubling", steps=6, decoder_first=4, checkpoint_every=2)
    start = _params_of(init_state(config).model.encoder)
    fit(dataclass_replace(config, steps=4), tmp_path, data=data, progress=False)
    first, _ = load_run(tmp_path / CHECKPOINT, config)
    for a, b in zip(start, _params_of(first.model.encoder)):
        np.testing.assert_array_equal(a, b)  # frozen for the first 4 steps
    assert any(not np.array_equal(a, b) for a, b in zip(_params_of(init_state(config).model.decoder),
                                                        _params_of(first.model.decoder)))
    later = fit(config, tmp_path, data=data, progress=False, resume=True)
    assert any(not np.array_equal(a, b) for a, b in zip(start, _params_of(later.model.encoder)))
    records = read_metrics(tmp_path)
    # While the decoder learns alone the loss is -log p(x|z) (plus the state penalty), not -ELBO.
    assert records[0]["loss"] < -records[0]["elbo"] and records[0]["kl"] > 0


def test_encoder_from_a_shipped_model(tmp_path):
    from vnca import pretrained

    config = train_config("nondoubling", "laptop")
    assert config.encoder_from == "doubling-laptop"
    from vnca.train import with_shipped_encoder

    shipped = _params_of(pretrained.load("doubling-laptop").encoder)
    fresh = init_state(config)  # a skeleton, or a state to resume into: no shipped model read
    assert not all(np.array_equal(a, b) for a, b in zip(shipped, _params_of(fresh.model.encoder)))
    for a, b in zip(shipped, _params_of(with_shipped_encoder(fresh, config.encoder_from).model.encoder)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="other shapes"):
        smoke = train_config("nondoubling", "smoke", encoder_from="doubling-laptop")
        with_shipped_encoder(init_state(smoke), smoke.encoder_from)


def _params_of(module):
    return [np.asarray(p) for p in jax.tree.leaves(eqx.filter(module, eqx.is_inexact_array))]


def test_final_learning_rate_falls_along_a_cosine():
    from vnca.step import optimiser

    # Adam's first steps on a constant gradient move each parameter by about the learning rate;
    # with a schedule, by the rate of the step it is at: 1e-2 at step 0, 1e-2 * (1 + cos(pi/2)) / 2
    # halfway, the final 1e-4 at the end (and after)
    opt = optimiser(1e-2, 10.0, decay_steps=100, final_learning_rate=1e-4)
    params = {"w": jnp.zeros(3)}
    state, moved = opt.init(params), []
    for _ in range(102):
        updates, state = opt.update({"w": jnp.ones(3)}, state, params)
        moved.append(float(-updates["w"][0]))
    assert moved[0] == pytest.approx(1e-2, rel=1e-3)
    assert moved[50] == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5, rel=1e-3)
    assert moved[100] == pytest.approx(1e-4, rel=1e-3) == moved[101]
    constant = optimiser(1e-2, 10.0)  # the paper's: no schedule
    assert jax.tree.structure(constant.init(params)) != jax.tree.structure(opt.init(params))
    with pytest.raises(ValueError, match="final_learning_rate must be positive and at most"):
        train_config("doubling", "smoke", final_learning_rate=1.0, decay_steps=10)
    with pytest.raises(ValueError, match="final_learning_rate and decay_steps go together"):
        train_config("doubling", "smoke", final_learning_rate=1e-5)
    with pytest.raises(ValueError, match="detach_pool_kl needs a pool"):
        train_config("doubling", "smoke", detach_pool_kl=True)


def test_kl_weight_schedule():
    from vnca.step import kl_weight

    paper = train_config("doubling", "full")
    assert [float(kl_weight(paper, s)) for s in (0, 5, 99_999)] == [1.0, 1.0, 1.0]
    c = train_config("nondoubling", "smoke", decoder_first=4, kl_warmup=4)
    assert [float(kl_weight(c, s)) for s in range(10)] == [0, 0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    with pytest.raises(ValueError, match="kl_warmup must be 0 or more"):
        train_config("nondoubling", "smoke", kl_warmup=-1)


def _with_remat(config, remat=True):
    return dataclass_replace(config, model_config=dataclass_replace(config.model_config, remat=remat))


def test_remat_turned_on_where_a_step_would_not_fit(capsys):
    from vnca.memory import call_bytes, device_memory, remat_if_needed
    from vnca.mesh import data_mesh
    from vnca.nca import compiling_for
    from vnca.step import place_state

    mesh = data_mesh()
    assert device_memory(mesh) is None  # a CPU sets no limit: fit leaves the model alone here
    # the accelerator path, where remat keeps only each NCA step's grid (on a CPU the steps are unrolled)
    config = train_config("nondoubling", "laptop", steps=2, steps_per_call=1, log_every=1, checkpoint_every=1)
    state = place_state(init_state(config), mesh)
    with compiling_for("tpu"):
        need, less = call_bytes(config, state, mesh, 1), call_bytes(_with_remat(config), state, mesh, 1)
        assert less < 0.7 * need  # measured: 110 MB without remat, 58 MB with it
        assert remat_if_needed(config, state, mesh, 1, limit=need) == config  # it fits: nothing changes
        assert capsys.readouterr().out == ""
        chosen = remat_if_needed(config, state, mesh, 1, limit=(need + less) // 2)
        assert chosen == _with_remat(config)
        said = capsys.readouterr().out
        assert "remat turned on" in said and f"{need / 2**30:.1f} GiB" in said and "still" not in said
        assert remat_if_needed(config, state, mesh, 1, limit=less // 2) == _with_remat(config)
        assert "expect XLA to run out of memory" in capsys.readouterr().out
    baseline = train_config("baseline", "smoke")  # no NCA, nothing to recompute
    assert remat_if_needed(baseline, init_state(baseline), mesh, 1, limit=1) == baseline


def test_fit_turns_remat_on_and_a_resumed_run_computes_as_its_config_says(tmp_path, data, monkeypatch):
    import vnca.memory

    config = _config("nondoubling", steps=4)
    fit(dataclass_replace(config, steps=2), tmp_path, data=data, progress=False)
    assert not load_run(tmp_path / CHECKPOINT)[0].model.decoder.config.remat
    # the saved run had remat off; resumed with it on, the steps recompute
    resumed = fit(_with_remat(config), tmp_path, data=data, progress=False, resume=True)
    assert resumed.model.decoder.config.remat and int(resumed.step) == 4
    # a device too small for the step: fit turns remat on, records it and says so
    monkeypatch.setattr(vnca.memory, "device_memory", lambda mesh: 1)
    state = fit(config, tmp_path / "small", data=data, progress=False)
    assert state.model.decoder.config.remat
    assert load_run(tmp_path / "small" / CHECKPOINT)[1].model_config.remat  # saved with the run
    off = fit(config, tmp_path / "off", data=data, progress=False, auto_remat=False)
    assert not off.model.decoder.config.remat


def test_a_call_on_a_cpu_scans_only_as_far_as_its_steps_draw(tmp_path, data, monkeypatch):
    """On a CPU the non-doubling decoder computes every NCA step its scan holds: a call scans to the
    largest T its steps draw, rounded up, and computes what the full scan computes."""
    import vnca.train
    from vnca.mesh import data_mesh, shard_batches
    from vnca.nca import compiling_for
    from vnca.step import SCAN_ROUNDING, drawn_steps, place_state, scan_length, train_steps

    config = _config("nondoubling", steps_per_call=1)
    smoke = config.model_config  # T in 8..16
    drawn = drawn_steps(config, 0, 200)
    assert drawn.min() == smoke.min_steps and drawn.max() == smoke.max_steps
    for first, count in [(f, c) for f in range(0, 195, 3) for c in (1, 5)]:
        length = scan_length(config, first, count)  # None: all of max_steps
        assert length is None or (length % SCAN_ROUNDING == 0 and length < smoke.max_steps)
        assert drawn[first:first + count].max() <= (length or smoke.max_steps)
    assert {scan_length(config, s, 1) for s in range(200)} == {SCAN_ROUNDING, None}
    assert scan_length(_config("doubling"), 0, 1) is None  # no T drawn
    with compiling_for("tpu"):  # an accelerator skips the steps past T
        assert scan_length(config, 0, 1) is None

    # with a random update mask (so the steps' keys matter) and a rule whose output is not zero
    config = dataclass_replace(config, model_config=dataclass_replace(smoke, update_probability=0.5))
    mesh, short = data_mesh(), SCAN_ROUNDING
    stacked = shard_batches(data.train[:4].reshape(1, 4, 32, 32), mesh)

    def at(step):
        state = init_state(config)
        shape = state.model.decoder.rule.output.weight.shape
        return place_state(eqx.tree_at(lambda s: (s.model.decoder.rule.output.weight, s.step), state,
                                       (0.05 * jax.random.normal(jax.random.key(1), shape),
                                        jnp.asarray(step, state.step.dtype))), mesh)

    def arrays(out):
        return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(out, eqx.is_inexact_array))]

    fits = next(s for s in range(200) if drawn[s] <= short)  # T fits in the short scan
    assert scan_length(config, fits, 1) == short < smoke.max_steps
    for a, b in zip(arrays(train_steps(config, at(fits), stacked, mesh)),
                    arrays(train_steps(config, at(fits), stacked, mesh, short)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # where T does not fit, the short scan stops early: the length is used
    longer = next(s for s in range(200) if drawn[s] == smoke.max_steps)
    full, cut = (train_steps(config, at(longer), stacked, mesh, n)[1]["loss"] for n in (None, short))
    assert not np.allclose(full, cut, rtol=1e-3)

    # fit passes each call's length
    original, lengths = vnca.train.train_steps_in_place, []

    def recording(stacked, config, state, mesh, length):
        lengths.append(length)
        return original(stacked, config, state, mesh, length)

    recording.lower = original.lower  # fit compiles a call before making it
    monkeypatch.setattr(vnca.train, "train_steps_in_place", recording)
    config = _config("nondoubling")
    fit(config, tmp_path, data=data, progress=False)
    # the first two steps one by one (steps_in_call), then calls of two
    assert lengths == [scan_length(config, 0, 1), scan_length(config, 1, 1)] + [
        scan_length(config, s, 2) for s in range(2, 8, 2)]


def test_on_a_cpu_a_runs_first_steps_are_calls_of_one_by_the_step_alone(tmp_path, data, monkeypatch):
    """A fused call takes steps_per_call times as long to compile: a run's first steps_per_call steps
    are single calls (the first step in seconds), then fused ones; the grouping is the step's alone,
    so a run resumed after them fuses at once, and on an accelerator every call is fused."""
    import vnca.train
    from vnca.nca import compiling_for
    from vnca.step import steps_in_call

    config = _config("baseline", steps=12, steps_per_call=4, log_every=4, checkpoint_every=4)
    assert [steps_in_call(config, s) for s in (0, 1, 2, 3, 4, 5, 8)] == [1, 1, 1, 1, 4, 4, 4]
    with compiling_for("tpu"):
        assert steps_in_call(config, 0) == 4
    original, sizes = vnca.train.train_steps_in_place, []

    def recording(stacked, *args):
        sizes.append(len(stacked))
        return original(stacked, *args)

    recording.lower = original.lower  # fit compiles a call before making it
    monkeypatch.setattr(vnca.train, "train_steps_in_place", recording)
    fit(dataclass_replace(config, steps=8), tmp_path, data=data, progress=False)
    assert sizes == [1, 1, 1, 1, 4]
    fit(config, tmp_path, data=data, progress=False, resume=True)  # from step 8: fused at once
    assert sizes == [1, 1, 1, 1, 4, 4]
    assert [r["step"] for r in read_metrics(tmp_path)] == [4, 8, 12]


def test_a_one_device_mesh_exchanges_nothing():
    # XLA's CPU backend kept a pmean over a single device as an all-reduce that copied every gradient
    # (8% of the paper baseline's step); with two devices or more, the gradient is averaged once.
    from vnca.mesh import data_mesh, shard_batches
    from vnca.scaling import hlo_collectives
    from vnca.step import place_state, train_steps

    config = _config("baseline", steps_per_call=1)
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = data_mesh(devices)
        state = place_state(init_state(config), mesh)
        stacked = shard_batches(np.zeros((1, config.batch_size, 32, 32), np.float32), mesh)
        text = train_steps.lower(config, state, stacked, mesh).compile().compiled.as_text()
        expected = [("all-reduce", "once")] if mesh.size > 1 else []
        assert list(hlo_collectives(text)) == expected, (mesh.size, hlo_collectives(text))

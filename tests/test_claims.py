"""The paper's claims as numbers (`vnca.claims`, the experiments chapter)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vnca import claims
from vnca.nondoubling import NonDoublingConfig, nondoubling_vnca
from vnca.vae import bernoulli_log_likelihood

CONFIG = NonDoublingConfig(latent=8, hidden=8, min_steps=4, max_steps=8, test_steps=6, encoder_width=4)


@pytest.fixture(scope="module")
def fresh():
    """A non-doubling VNCA as initialised: its rule's output layer is zero, so the grid never
    changes, and what the measurements say is known exactly."""
    return nondoubling_vnca(CONFIG, key=jax.random.key(0))


def images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 32, 32)) < 0.2).astype(np.float32)


def test_log_p_by_step_scores_every_step_and_damages_once(fresh):
    x = images(3)
    seeds = jax.vmap(lambda im: fresh.decoder.seed(fresh.encoder(im)[0]))(jnp.asarray(x))
    expected = jax.vmap(bernoulli_log_likelihood)(seeds[..., 0], jnp.asarray(x)).mean()
    clean = np.asarray(claims.log_p_by_step(fresh, jnp.asarray(x), jax.random.key(1), 20))
    assert clean.shape == (20,)
    np.testing.assert_allclose(clean, expected, rtol=1e-5)  # f = 0: the seed's score throughout
    hit = np.asarray(claims.log_p_by_step(fresh, jnp.asarray(x), jax.random.key(1), 20, damage_at=8))
    np.testing.assert_allclose(hit[:7], clean[:7], rtol=1e-5)  # before the damage: the same grid
    # from step 8 on, a zeroed square's logits are 0: each of its 256 pixels costs log 2 exactly,
    # and a rule that does nothing never repairs it
    assert not np.allclose(hit[7], clean[7])
    np.testing.assert_allclose(hit[7:], hit[7], rtol=1e-5)


def test_held_and_regrowth_read_the_curve_at_the_right_steps(fresh):
    x = images(2)
    h = claims.held(fresh, x, jax.random.key(2), steps=1_000)
    assert h["curve"].shape == (1_000,)
    assert h["at_1000"] == h["at_end"] == pytest.approx(h["best_32_64"])
    r = claims.regrowth(fresh, x, jax.random.key(3))
    assert r["damaged"] == pytest.approx(r["right_after"])  # nothing regrows
    assert r["gap"] == pytest.approx(r["undamaged"] - r["damaged"])
    assert r["gap"] != 0


def test_claims_met_applies_the_written_thresholds():
    ok = {
        "agreement": {"ratio": 0.9},
        "held": {"best_32_64": -100.0, "at_1000": -110.0, "at_end": -130.0},
        "regrowth": {"gap": 10.0},
        "samples": {"confident": 0.5, "digits": [0.1] * 10},
    }
    assert all(claims.claims_met(ok).values())
    bad = {
        "agreement": {"ratio": 0.89},
        "held": {"best_32_64": -100.0, "at_1000": -110.1, "at_end": float("nan")},
        "regrowth": {"gap": 10.1},
        "samples": {"confident": 0.9, "digits": [0.2] * 5 + [0.0] * 5},  # confident, but five digits
    }
    assert not any(claims.claims_met(bad).values())


def test_digit_agreement_compares_reconstructions_with_inputs():
    class Reads:  # a classifier that reads the mean ink: dark images are 1s, light ones 0s
        def predict(self, x):
            return (x.mean(-1) > 0.5).astype(int)

    x = np.stack([np.ones((32, 32)), np.zeros((32, 32)), np.ones((32, 32)), np.zeros((32, 32))])
    digits = np.array([1, 0, 1, 1])  # the classifier gets 3 of 4 inputs right
    recon = np.stack([np.ones((32, 32)), np.ones((32, 32)), np.zeros((32, 32)), np.zeros((32, 32))])
    a = claims.digit_agreement(Reads(), x, recon, digits)
    assert (a["input"], a["reconstruction"]) == (0.75, 0.25)
    assert a["ratio"] == pytest.approx(1 / 3)


def test_log_p_by_step_refuses_the_doubling_decoder():
    from vnca.doubling import DoublingConfig, doubling_vnca

    model = doubling_vnca(DoublingConfig(latent=8, hidden=8, residual_blocks=1, encoder_width=4),
                          key=jax.random.key(0))
    with pytest.raises(ValueError, match="non-doubling"):
        claims.log_p_by_step(model, jnp.zeros((1, 32, 32)), jax.random.key(0), 4)


def _stored(name):
    import json

    from conftest import ROOT
    from vnca import pretrained

    path = ROOT / "results" / "laptop" / name / "claims.json"
    assert path.exists(), f"{path} missing: run tools/claims.py {name}"
    stored = json.loads(path.read_text())
    assert stored["sha256"] == pretrained.manifest()[name]["sha256"], \
        f"{path} measured other weights than the shipped ones: run tools/claims.py {name}"
    return stored


@pytest.mark.parametrize("name", ["baseline-laptop", "doubling-laptop", "nondoubling-laptop"])
def test_stored_claims_are_of_the_shipped_weights(name):
    stored = _stored(name)
    assert stored["met"] == claims.claims_met(stored)
    a = stored["agreement"]
    assert 0 < a["reconstruction"] <= 1 and a["ratio"] == pytest.approx(a["reconstruction"] / a["input"])


@pytest.fixture(scope="module")
def nondoubling(data_dir):
    from vnca import pretrained
    from vnca.data import load_binarized_mnist

    stored = _stored("nondoubling-laptop")
    model = pretrained.load("nondoubling-laptop")
    return model, load_binarized_mnist().test[stored["long_rows"]], stored


def test_stored_non_doubling_curve_is_what_the_shipped_weights_grow(nondoubling):
    # The first 1,000 steps of the stored 10,000-step curve, grown again from the same 64 digits with
    # the same key, and the regrowth measurement whole: the page's numbers are these weights'.
    model, x, stored = nondoubling
    curve = np.asarray(claims.log_p_by_step(model, jnp.asarray(x, jnp.float32),
                                            jax.random.fold_in(jax.random.key(12), 1), 1_000))
    steps = np.array(stored["held"]["curve"]["steps"])
    early = steps <= 1_000
    np.testing.assert_allclose(curve[steps[early] - 1], np.array(stored["held"]["curve"]["log_p"])[early],
                               rtol=1e-3)
    assert curve[999] == pytest.approx(stored["held"]["at_1000"], rel=1e-3)
    r = claims.regrowth(model, x, jax.random.fold_in(jax.random.key(12), 2))
    for k in ("undamaged", "damaged", "gap"):
        assert r[k] == pytest.approx(stored["regrowth"][k], rel=1e-3, abs=1e-2)


def _bound(name):
    from vnca import pretrained

    return pretrained.manifest()[name]["evaluation"]["log_likelihood"]


# The claims each shipped model keeps, read from its stored measurements (which the tests above tie
# to the weights). Issue 33: those the laptop models shipped now do not keep are strict xfails, so
# that a model that starts to keep one fails here until its test is made a plain one.
KEPT = [("baseline-laptop", "agreement"), ("doubling-laptop", "agreement"), ("doubling-laptop", "samples")]
NOT_YET = [("nondoubling-laptop", "agreement"),
           ("nondoubling-laptop", "holds_1000"), ("nondoubling-laptop", "holds_10000"),
           ("nondoubling-laptop", "regrowth")]


@pytest.mark.parametrize("name, claim", KEPT)
def test_shipped_models_keep_their_claims(name, claim):
    assert _stored(name)["met"][claim]


@pytest.mark.parametrize("name, claim", NOT_YET)
@pytest.mark.xfail(strict=True, reason="issue 33: the laptop models shipped now do not keep this claim")
def test_shipped_models_do_not_yet_keep_these_claims(name, claim):
    assert _stored(name)["met"][claim]


@pytest.mark.xfail(strict=True, reason="issue 33: doubling-laptop trails baseline-laptop by 2.9 nats, "
                   "both trained on 640,000 images")
def test_the_doubling_bound_is_within_2_nats_of_the_baseline():
    assert _bound("doubling-laptop") >= _bound("baseline-laptop") - claims.CLAIMS["bound_gap"]

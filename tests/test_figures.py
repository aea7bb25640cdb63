"""Every figure function runs on a tiny model and writes a non-empty image; `vnca figures` works."""

import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from conftest import perturbed  # noqa: E402
from vnca.baseline import BaselineConfig, baseline  # noqa: E402
from vnca.data import BinarizedMNIST  # noqa: E402
from vnca.doubling import DoublingConfig, doubling_vnca  # noqa: E402
from vnca.figures import linear_probe, make_figures  # noqa: E402
from vnca.nondoubling import NonDoublingConfig, nondoubling_vnca  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    images = (rng.random((120, 32, 32)) < 0.2).astype(np.uint8)
    labels = np.arange(120) % 10
    return BinarizedMNIST(train=images[:8], test=images), labels


MODELS = {
    "baseline": lambda: baseline(BaselineConfig(latent=8), key=jax.random.key(1)),
    "doubling": lambda: doubling_vnca(DoublingConfig(latent=8, hidden=8, residual_blocks=1), key=jax.random.key(2)),
    "nondoubling": lambda: nondoubling_vnca(NonDoublingConfig(latent=8, hidden=8, test_steps=4), key=jax.random.key(3)),
}
EXPECTED = {
    "baseline": {"reconstructions", "samples", "interpolations", "tsne"},
    "doubling": {"reconstructions", "samples", "interpolations", "tsne", "growth"},
    "nondoubling": {"reconstructions", "samples", "interpolations", "tsne", "damage_frames", "damage_strip",
                    "latent_channels", "linear_probe"},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_figure_is_drawn(tmp_path, tiny_data, name):
    data, labels = tiny_data
    model = perturbed(MODELS[name]())
    compare = ("baseline", perturbed(MODELS["baseline"](), seed=1)) if name == "doubling" else None
    paths = make_figures(model, name, tmp_path, data, labels, jax.random.key(0), note="tiny test model",
                         compare=compare, tsne_images=60)
    assert {p.stem for p in paths} == EXPECTED[name]
    for path in paths:
        image = plt.imread(path)
        assert image.shape[0] > 50 and image.shape[1] > 50, path
        assert image[..., :3].std() > 0.01, f"{path.name} is blank"


def test_figure_functions_refuse_the_wrong_decoder(tiny_data):
    from vnca.figures import damage_strip, growth

    data, labels = tiny_data
    with pytest.raises(ValueError, match="doubling decoder"):
        growth(MODELS["baseline"](), jax.random.key(0))
    with pytest.raises(ValueError, match="non-doubling decoder"):
        damage_strip(MODELS["doubling"](), jax.random.key(0))
    with pytest.raises(ValueError, match="non-doubling decoder"):
        linear_probe(MODELS["doubling"](), data.test[:20], labels[:20])


class _LabelEncoder(eqx.Module):
    """Reads the label hidden in an image's corner pixel and returns it, one-hot, as the mean."""

    def __call__(self, x):
        digit = jnp.round(x[0, 0] * 10).astype(jnp.int32)
        return jax.nn.one_hot(digit, 16), jnp.zeros(16)


def test_linear_probe_finds_a_digit_that_every_cell_carries(tiny_data):
    data, labels = tiny_data
    images = np.asarray(data.test, np.float32).copy()
    images[:, 0, 0] = labels / 10.0
    # Untrained, the update rule is zero: the grown grid is the seed, the encoder's mean in every cell.
    model = nondoubling_vnca(NonDoublingConfig(latent=16, hidden=8, test_steps=4), key=jax.random.key(3))
    model = eqx.tree_at(lambda m: m.encoder, model, _LabelEncoder())
    _, accuracy = linear_probe(model, images, labels)
    assert accuracy > 0.95, accuracy
    shuffled = np.random.default_rng(0).permutation(labels)  # labels that the cells cannot know
    _, chance = linear_probe(model, images, shuffled)
    assert chance < 0.5, chance


def test_figures_command(tmp_path, smoke_run):
    vnca = Path(sys.executable).parent / "vnca"
    run = smoke_run("nondoubling")
    out = tmp_path / "figures"
    made = subprocess.run([str(vnca), "figures", str(run), "--out", str(out), "--tsne-images", "100"],
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    assert {p.stem for p in out.glob("*.png")} == EXPECTED["nondoubling"]
    missing = subprocess.run([str(vnca), "figures", str(tmp_path / "nowhere"), "--out", str(out)],
                             capture_output=True, text=True, timeout=900)
    assert missing.returncode == 2 and "no such run or checkpoint" in missing.stderr


def test_damage_recovery_scores_the_three_moments(tiny_data):
    from vnca.figures import damage_recovery
    from vnca.vae import bernoulli_log_likelihood

    images = tiny_data[0].test[:5]
    config = NonDoublingConfig(latent=8, hidden=8, min_steps=2, max_steps=4, test_steps=3)
    untrained = nondoubling_vnca(config, key=jax.random.key(0))  # its update is exactly zero
    scores = damage_recovery(untrained, images, jax.random.key(1), steps=3)
    assert {k: v.shape for k, v in scores.items()} == {k: (5,) for k in ("grown", "damaged", "recovered")}
    np.testing.assert_allclose(scores["recovered"], scores["damaged"])  # nothing regrows without a rule
    means = jax.vmap(untrained.encoder)(jnp.asarray(images, jnp.float32))[0]
    seeds = jax.vmap(untrained.decoder.seed)(means)
    expected = jax.vmap(bernoulli_log_likelihood)(seeds[..., 0], jnp.asarray(images, jnp.float32))
    np.testing.assert_allclose(scores["grown"], expected, rtol=1e-5)
    trained = damage_recovery(perturbed(untrained), images, jax.random.key(1), steps=3)
    assert not np.allclose(trained["recovered"], trained["damaged"])


def test_sample_quality_counts_confident_classifications(tiny_data):
    from sklearn.linear_model import LogisticRegression

    from vnca.classifier import classified, quality_plot, sample_quality

    images, labels = tiny_data[0].test, tiny_data[1]
    classifier = LogisticRegression(max_iter=200).fit(images.reshape(len(images), -1).astype(np.float32), labels)
    confident = classified(classifier, images, threshold=0.0)
    assert confident["confident"] == 1.0 and confident["digits"].sum() == pytest.approx(1.0)
    assert classified(classifier, images, threshold=1.01)["confident"] == 0.0
    model = perturbed(doubling_vnca(DoublingConfig(latent=8, hidden=8, residual_blocks=1), key=jax.random.key(0)))
    quality = sample_quality(model, classifier, jax.random.key(2), n=30)
    assert 0 <= quality["confident"] <= 1 and quality["digits"].shape == (10,)
    assert quality["digits"].sum() == pytest.approx(1.0)
    fig = quality_plot({"test digits": confident, "samples": quality}, note="tiny")
    assert len(fig.axes) == 2
    plt.close(fig)


def _shown(fig, row: int, column: int, columns: int) -> np.ndarray:
    """The array an `image_rows` figure shows at (row, column)."""
    return np.asarray(fig.axes[row * columns + column].get_images()[0].get_array())


def test_figures_show_what_they_claim(tiny_data):
    """Not only non-blank: each figure shows the model's own numbers, in the right place."""
    from vnca.figures import damage_frames, decode, growth, interpolations, prior, reconstructions, tsne
    from vnca.vae import reparameterise

    data, labels = tiny_data
    images = np.asarray(data.test[:10], np.float32)
    key = jax.random.key(7)

    model = perturbed(MODELS["baseline"]())
    fig = reconstructions(model, images, key)
    sample_key, decode_key, _ = jax.random.split(key, 3)
    mean, log_scale = jax.vmap(model.encoder)(jnp.asarray(images))
    z = jax.vmap(reparameterise)(jax.random.split(sample_key, 10), mean, log_scale)
    expected = jax.nn.sigmoid(decode(model, z, decode_key))
    for i in (0, 9):
        np.testing.assert_array_equal(_shown(fig, 0, i, 10), images[i])  # the inputs on top
        np.testing.assert_allclose(_shown(fig, 1, i, 10), expected[i], atol=1e-6)  # their decodings below
    plt.close(fig)

    doubling = perturbed(MODELS["doubling"]())
    fig = growth(doubling, key)
    z_key, _ = jax.random.split(key)
    final = jax.nn.sigmoid(doubling.decoder(prior(doubling, z_key, 1)[0]))
    columns = len(fig.axes) // 5
    assert _shown(fig, 0, 0, columns).shape == (2, 2)  # the first round: 2x2 after doubling
    np.testing.assert_allclose(_shown(fig, 4, columns - 1, columns), final, atol=1e-6)  # ends at the output
    plt.close(fig)

    ends = prior(doubling, jax.random.key(1), 2)
    fig = interpolations(doubling, {"a to b": (ends[0], ends[1])}, key, steps=5)
    np.testing.assert_allclose(_shown(fig, 0, 0, 5), jax.nn.sigmoid(doubling.decoder(ends[0])), atol=1e-6)
    np.testing.assert_allclose(_shown(fig, 0, 4, 5), jax.nn.sigmoid(doubling.decoder(ends[1])), atol=1e-6)
    plt.close(fig)

    nondoubling = perturbed(MODELS["nondoubling"]())
    fig = damage_frames(nondoubling, key, steps=8, every=4)
    damaged = _shown(fig, 1, 0, len(fig.axes) // 3)
    rows, cols = np.nonzero(damaged == 0.5)  # a zeroed cell's logit is 0: probability exactly 0.5
    assert len(rows) >= 16 * 16
    assert rows.max() - rows.min() == cols.max() - cols.min() == 15  # one 16x16 square
    plt.close(fig)

    means = np.random.default_rng(0).normal(size=(60, 4))
    fig = tsne({"m": means}, labels[:60])
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_array(), labels[:60])  # coloured by digit
    plt.close(fig)


def test_probe_figure_colour_bars_do_not_overlap(tiny_data):
    from vnca.figures import probe_maps

    data, labels = tiny_data
    model = perturbed(MODELS["nondoubling"]())
    probe, _ = linear_probe(model, np.asarray(data.test[:60], np.float32), labels[:60])
    fig = probe_maps(model, probe, jax.random.key(0), n=8, note="tiny")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]  # 24 images, then the two bars with labels
    assert len(boxes) == 26
    for i in range(24, 26):
        for j in range(len(boxes)):
            if i != j:
                assert not boxes[i].overlaps(boxes[j]), (i, j)
    plt.close(fig)

"""The models: parameter counts, shapes, the NCA's invariants, the objectives, and an independent
NumPy check of the layout conventions."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vnca.baseline import BaselineConfig, ConvDecoder, baseline
from vnca.doubling import DoublingConfig, DoublingDecoder, double, doubling_vnca
from vnca.layers import Conv
from vnca.nca import PerCell, UpdateRule, run, step
from vnca.nondoubling import NonDoublingConfig, NonDoublingDecoder, nondoubling_vnca, sample_steps
from vnca.vae import (Encoder, batch_elbo, bernoulli_log_likelihood, elbo, importance_weighted_bound,
                      kl_to_standard_normal, log_importance_weights, normal_log_density, parameter_count,
                      reparameterise)

KEY = jax.random.key(0)
TINY_DOUBLING = DoublingConfig(latent=8, hidden=8, residual_blocks=1)
TINY_NONDOUBLING = NonDoublingConfig(latent=8, hidden=8, min_steps=2, max_steps=6, test_steps=3)


def _stir(decoder, key=KEY):
    """The decoder with a random (non-zero) last layer, so its update rule does something."""
    c = decoder.rule.output.weight.shape[0]
    return eqx.tree_at(lambda d: d.rule.output, decoder, PerCell(c, decoder.rule.output.weight.shape[1], key=key))


@pytest.fixture(scope="module")
def images(data_dir):
    from vnca.data import load_split, pad
    return jnp.asarray(pad(load_split("test")[:: 997][:8]), jnp.float32)  # 8 digits of varied kinds


# ---------------------------------------------------------------- parameter counts (the paper's)


def test_parameter_counts_are_the_papers():
    base = baseline(key=KEY)
    assert parameter_count(base) == 10_282_497
    assert (parameter_count(base.encoder), parameter_count(base.decoder)) == (5_402_880, 4_879_617)
    dbl = doubling_vnca(key=KEY)
    assert parameter_count(dbl) == 6_585_088
    assert parameter_count(dbl.decoder) == 1_182_208 == 590_080 + 4 * 131_584 + 65_792
    nd = nondoubling_vnca(key=KEY)
    assert parameter_count(nd) == 5_042_432
    assert (parameter_count(nd.encoder), parameter_count(nd.decoder)) == (4_878_336, 164_096)


def test_configs_are_frozen_with_the_papers_defaults():
    assert BaselineConfig().latent == 256
    d = DoublingConfig()
    assert (d.latent, d.hidden, d.residual_blocks, d.doublings, d.steps_per_doubling, d.side) == (256, 256, 4, 5, 8, 32)
    n = NonDoublingConfig()
    assert (n.latent, n.hidden, n.side, n.min_steps, n.max_steps, n.test_steps) == (128, 128, 32, 32, 64, 36)
    with pytest.raises(Exception):
        d.latent = 3


# ---------------------------------------------------------------- shapes


def test_shapes_of_every_stage():
    enc = Encoder(256, key=KEY)
    h = jnp.zeros((32, 32, 1))
    sides = []
    for conv in enc.convs:
        h = conv(h)
        sides.append(h.shape)
    assert sides == [(32, 32, 32), (16, 16, 64), (8, 8, 128), (4, 4, 256), (2, 2, 512)]
    mean, log_scale = enc(jnp.zeros((32, 32)))
    assert mean.shape == log_scale.shape == (256,)

    dec = ConvDecoder(256, key=KEY)
    h = dec.linear(jnp.zeros(256)).reshape(2, 2, 512)
    sides = []
    for layer in dec.upsample:
        h = layer(h)
        sides.append(h.shape)
    assert sides == [(4, 4, 256), (8, 8, 128), (16, 16, 64), (32, 32, 32)]
    assert dec(jnp.zeros(256)).shape == (32, 32)

    decoder = DoublingDecoder(TINY_DOUBLING, key=KEY)
    final, rounds = decoder.grow(jnp.zeros(8))
    assert [r.shape for r in rounds] == [(9, s, s, 8) for s in (2, 4, 8, 16, 32)]
    assert final.shape == (32, 32, 8) and decoder(jnp.zeros(8)).shape == (32, 32)

    nd = nondoubling_vnca(TINY_NONDOUBLING, key=KEY)
    assert nd.decoder(jnp.zeros(8)).shape == (32, 32)


# ---------------------------------------------------------------- the NCA


@pytest.mark.parametrize("make", [
    lambda: doubling_vnca(TINY_DOUBLING, key=KEY).decoder,
    lambda: nondoubling_vnca(TINY_NONDOUBLING, key=KEY).decoder,
    lambda: doubling_vnca(key=KEY).decoder,
])
def test_at_initialisation_the_decoder_returns_the_seed(make):
    decoder = make()
    z = jax.random.normal(jax.random.key(1), (decoder.config.latent,))
    logits = decoder(z)
    np.testing.assert_array_equal(logits, jnp.full(logits.shape, z[0]))


def test_doubling_is_a_2x2_block_copy():
    state = jax.random.normal(KEY, (3, 5, 4))
    doubled = np.asarray(double(state))
    assert doubled.shape == (6, 10, 4)
    np.testing.assert_array_equal(doubled, np.repeat(np.repeat(np.asarray(state), 2, axis=0), 2, axis=1))
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        block = doubled[2 * i:2 * i + 2, 2 * j:2 * j + 2]
        np.testing.assert_array_equal(block, np.broadcast_to(np.asarray(state)[i, j], block.shape))


@pytest.mark.parametrize("residual_blocks, elu", [(0, True), (2, False)])
def test_locality_one_cell_per_step(residual_blocks, elu):
    rule = UpdateRule(6, 6, residual_blocks, elu, key=KEY)
    rule = eqx.tree_at(lambda r: r.output, rule, PerCell(6, 6, key=jax.random.key(5)))
    state = jax.random.normal(jax.random.key(2), (21, 21, 6))
    poked = state.at[10, 10, 3].add(1.0)
    _, a = run(rule, state, 7, trajectory=True)
    _, b = run(rule, poked, 7, trajectory=True)
    changed = np.abs(np.asarray(a - b)).max(axis=-1) > 0
    rows, cols = np.indices((21, 21))
    distance = np.maximum(abs(rows - 10), abs(cols - 10))
    for t in range(1, 8):
        assert not changed[t - 1][distance > t].any(), f"step {t}: a change travelled more than {t} cells"
        assert changed[t - 1][distance == t].any(), f"step {t}: the change did not reach {t} cells"


def test_traced_step_count_matches_a_fixed_one():
    rule = eqx.tree_at(lambda r: r.output, UpdateRule(4, 4, 0, True, key=KEY), PerCell(4, 4, key=KEY))
    state = jax.random.normal(KEY, (8, 8, 4)) * 0.3
    jitted = jax.jit(lambda s, n: run(rule, s, n, max_steps=10))
    for n in (0, 1, 7, 10):
        np.testing.assert_allclose(jitted(state, n), run(rule, state, n), rtol=1e-6, atol=1e-6)
    # and so does the gradient, unrolled (the CPU's default) or in a loop
    for unroll in (True, False):
        traced = jax.jit(jax.grad(lambda r, n: jnp.sum(run(r, state, n, max_steps=10, unroll=unroll) ** 2)))
        fixed = jax.grad(lambda r: jnp.sum(run(r, state, 7) ** 2))(rule)
        for a, b in zip(jax.tree.leaves(traced(rule, 7)), jax.tree.leaves(fixed)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(run(rule, state, 0), state)
    with pytest.raises(ValueError, match="needs max_steps"):
        jax.jit(lambda s, n: run(rule, s, n))(state, 3)


def test_update_mask():
    rule = eqx.tree_at(lambda r: r.output, UpdateRule(4, 4, 0, True, key=KEY), PerCell(4, 4, key=KEY))
    state = jax.random.normal(KEY, (16, 16, 4))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        step(rule, state, None, 0.5)
    moved = np.abs(np.asarray(step(rule, state, jax.random.key(3), 0.5) - state)).max(axis=-1) > 0
    assert 0.3 < moved.mean() < 0.7  # about half the cells updated
    np.testing.assert_array_equal(step(rule, state, jax.random.key(3), 1.0), state + rule(state))


def test_sampled_step_counts_cover_both_ends():
    drawn = np.asarray(jax.vmap(lambda k: sample_steps(k, NonDoublingConfig()))(jax.random.split(KEY, 4000)))
    assert drawn.min() == 32 and drawn.max() == 64


def test_remat_changes_nothing_but_memory():
    plain = _stir(nondoubling_vnca(TINY_NONDOUBLING, key=KEY).decoder)
    remat_config = dataclasses.replace(TINY_NONDOUBLING, remat=True)
    remat = eqx.tree_at(lambda d: d.rule, NonDoublingDecoder(remat_config, key=KEY), plain.rule)
    z = jax.random.normal(KEY, (8,))

    def loss(decoder):
        return jnp.sum(decoder(z, steps=jnp.asarray(5)) ** 2)

    np.testing.assert_allclose(loss(plain), loss(remat), rtol=1e-6)
    g1, g2 = eqx.filter_grad(loss)(plain), eqx.filter_grad(loss)(remat)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the objectives


def test_analytic_kl_matches_monte_carlo():
    mean = jax.random.normal(jax.random.key(1), (16,))
    log_scale = 0.5 * jax.random.normal(jax.random.key(2), (16,))
    z = jax.vmap(lambda k: reparameterise(k, mean, log_scale))(jax.random.split(KEY, 200_000))
    samples = jax.vmap(lambda z: normal_log_density(z, mean, log_scale) - normal_log_density(z))(z)
    estimate, error = float(samples.mean()), float(samples.std() / math.sqrt(len(samples)))
    assert abs(estimate - float(kl_to_standard_normal(mean, log_scale))) < 4 * error


def test_bound_with_one_sample_is_the_single_sample_estimate(images):
    model = baseline(key=KEY)
    x, key = images[0], jax.random.key(7)
    (k1,) = jax.random.split(key, 1)
    sample_key, decoder_key = jax.random.split(k1)
    mean, log_scale = model.encoder(x)
    z = reparameterise(sample_key, mean, log_scale)
    by_hand = (bernoulli_log_likelihood(model.decoder(z, key=decoder_key), x) + normal_log_density(z)
               - normal_log_density(z, mean, log_scale))
    np.testing.assert_allclose(importance_weighted_bound(model, x, key, samples=1), by_hand, rtol=1e-6)


def test_chunking_does_not_change_the_bound(images):
    model = baseline(key=KEY)
    a = log_importance_weights(model, images[1], KEY, samples=12, chunk=12)
    b = log_importance_weights(model, images[1], KEY, samples=12, chunk=5)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_bound_does_not_decrease_with_more_samples(images):
    # A fixed model whose decoder depends strongly on z, so that q(z|x) is far from the posterior.
    model = baseline(key=KEY)
    model = eqx.tree_at(lambda m: m.decoder.linear.weight, model, model.decoder.linear.weight * 30)
    bound = jax.jit(jax.vmap(jax.vmap(importance_weighted_bound, in_axes=(None, None, 0, None)),
                             in_axes=(None, 0, None, None)), static_argnums=3)
    keys = jax.random.split(jax.random.key(11), 8)  # 8 repetitions per image
    means = {}
    for k in (1, 4, 32):
        values = np.asarray(bound(model, images, keys, k))  # (images, repetitions)
        means[k] = values.mean(axis=1)
    gain_small, gain_large = means[4] - means[1], means[32] - means[4]
    assert gain_small.mean() > 3 * gain_small.std(ddof=1) / math.sqrt(len(gain_small))  # a clear gain
    assert gain_large.mean() > -3 * gain_large.std(ddof=1) / math.sqrt(len(gain_large))  # never a loss


def _log_sigmoid64(logits):
    return -np.logaddexp(0.0, -np.asarray(logits, np.float64))


def test_elbo_terms_match_an_independent_computation(images):
    """The ELBO's parts, recomputed in float64 from the same noise, with the KL by Monte Carlo."""
    model = baseline(BaselineConfig(latent=16), key=KEY)
    x = np.asarray(images[0], np.float64)
    terms = elbo(model, jnp.asarray(x, jnp.float32), KEY)
    mean, log_scale = (np.asarray(a, np.float64) for a in model.encoder(jnp.asarray(x, jnp.float32)))
    sample_key, decoder_key = jax.random.split(KEY)  # how `elbo` uses its key
    noise = np.asarray(jax.random.normal(sample_key, mean.shape), np.float64)
    z = jnp.asarray(mean + np.exp(log_scale) * noise, jnp.float32)
    logits = np.asarray(model.decoder(z, key=decoder_key), np.float64)
    log_likelihood = np.sum(x * _log_sigmoid64(logits) + (1 - x) * _log_sigmoid64(-logits))
    eps = np.random.default_rng(0).standard_normal((100_000, len(mean)))
    draws = mean + np.exp(log_scale) * eps
    gap = (-0.5 * eps**2 - log_scale).sum(1) - (-0.5 * draws**2).sum(1)  # log q - log p per draw
    kl, se = gap.mean(), gap.std() / math.sqrt(len(gap))
    assert float(terms.log_likelihood) == pytest.approx(log_likelihood, rel=1e-5)
    assert abs(float(terms.kl) - kl) < 4 * se + 1e-3, (float(terms.kl), kl, se)
    assert float(terms.elbo) == pytest.approx(log_likelihood - float(terms.kl), rel=1e-5)
    keys = jax.random.split(KEY, len(images))  # the batch is the mean of one key per image
    each = [float(elbo(model, images[i], keys[i]).elbo) for i in range(len(images))]
    assert float(batch_elbo(model, images, KEY).elbo) == pytest.approx(np.mean(each), rel=1e-5)


def test_no_nan_for_extreme_logits_and_latents():
    x = np.zeros((32, 32))
    x[::2] = 1.0
    for value in (1e30, -1e30, 80.0, -80.0, 0.0):  # against float64: exact, never NaN, never inf
        ll = bernoulli_log_likelihood(jnp.full((32, 32), value), jnp.asarray(x))
        expected = np.sum(x * _log_sigmoid64(value) + (1 - x) * _log_sigmoid64(-value))
        assert float(ll) == pytest.approx(expected, rel=1e-4), value  # a float32 sum of 1,024
    for value, expected in ((jnp.inf, -np.inf), (-jnp.inf, -np.inf)):  # certain and wrong: -inf, not NaN
        assert float(bernoulli_log_likelihood(jnp.full((32, 32), value), jnp.asarray(x))) == expected
    assert bernoulli_log_likelihood(jnp.full((32, 32), 1e30), jnp.ones((32, 32))) == 0.0
    for mean, log_scale in [(1e18, 0.0), (0.0, 40.0), (0.0, -40.0), (-3.0, -80.0)]:
        kl = float(kl_to_standard_normal(jnp.full(4, mean), jnp.full(4, log_scale)))
        expected = 0.5 * 4 * (mean**2 + math.exp(2 * log_scale) - 1 - 2 * log_scale)
        assert kl == pytest.approx(expected, rel=1e-5), (mean, log_scale)
    # Trained decoders (here: stirred, so that their update is not zero) meet latents far outside the
    # prior (|z| = 50, 10 standard deviations): the logits stay finite and the likelihood a number.
    for model in (doubling_vnca(TINY_DOUBLING, key=KEY), nondoubling_vnca(TINY_NONDOUBLING, key=KEY)):
        decoder = _stir(model.decoder)
        for value in (50.0, -50.0):
            logits = decoder(jnp.full(decoder.config.latent, value))
            assert bool(jnp.isfinite(logits).all()), value
            assert bool(jnp.isfinite(bernoulli_log_likelihood(logits, jnp.ones(logits.shape)))), value


@pytest.mark.parametrize("make, steps", [
    (lambda: baseline(key=KEY), None),
    (lambda: doubling_vnca(TINY_DOUBLING, key=KEY), None),
    (lambda: nondoubling_vnca(TINY_NONDOUBLING, key=KEY), jnp.asarray(4)),
])
def test_gradients_are_finite_and_reach_every_layer(make, steps, images):
    model = make()
    model = eqx.tree_at(lambda m: m.decoder, model, _stir(model.decoder)) if steps is not None or hasattr(
        model.decoder, "rule") else model

    def loss(m):
        return -batch_elbo(m, images[:2], KEY, steps=steps).elbo

    grads = eqx.filter_grad(loss)(model)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert all(float(jnp.abs(g).max()) > 0 for g in leaves), "some parameter gets no gradient"


# ---------------------------------------------------------------- an independent NumPy check


def _np_conv(x, w, stride, pad):
    """Cross-correlation of one channels-last image, with explicit loops over the output."""
    k = w.shape[0]
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    out_h = (xp.shape[0] - k) // stride + 1
    out = np.zeros((out_h, out_h, w.shape[-1]))
    for i in range(out_h):
        for j in range(out_h):
            patch = xp[i * stride:i * stride + k, j * stride:j * stride + k]
            out[i, j] = np.tensordot(patch, w, axes=([0, 1, 2], [0, 1, 2]))
    return out


def _np_conv_transpose(x, w, stride, pad, output_pad):
    """A transposed convolution by its definition: every input cell scatters a k x k stamp."""
    k = w.shape[0]
    side = (x.shape[0] - 1) * stride - 2 * pad + k + output_pad
    full = np.zeros((side + 2 * pad + k, side + 2 * pad + k, w.shape[-1]))
    flipped = w[::-1, ::-1]  # our weight is that of the equivalent forward convolution
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            full[i * stride:i * stride + k, j * stride:j * stride + k] += np.tensordot(x[i, j], flipped, axes=([0], [2]))
    return full[pad:pad + side, pad:pad + side]


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def test_encoder_agrees_with_numpy(images):
    enc = Encoder(16, key=jax.random.key(3))
    x = np.asarray(images[2], np.float64)
    h = x[..., None]
    for conv, stride in zip(enc.convs, (1, 2, 2, 2, 2)):
        h = _elu(_np_conv(h, np.asarray(conv.weight, np.float64), stride, 2) + np.asarray(conv.bias))
    out = np.asarray(enc.linear.weight, np.float64) @ h.reshape(-1) + np.asarray(enc.linear.bias)
    mean, log_scale = enc(images[2])
    np.testing.assert_allclose(np.concatenate([mean, log_scale]), out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("side, c_in, c_out", [(2, 6, 5), (8, 3, 4)])
def test_transposed_convolution_agrees_with_its_definition(side, c_in, c_out):
    conv = Conv(c_in, c_out, 5, stride=2, padding=2, output_padding=1, transposed=True, key=KEY)
    x = np.asarray(jax.random.normal(jax.random.key(1), (side, side, c_in)), np.float64)
    expected = _np_conv_transpose(x, np.asarray(conv.weight, np.float64), 2, 2, 1) + np.asarray(conv.bias)
    got = conv(jnp.asarray(x, jnp.float32))
    assert got.shape == (2 * side, 2 * side, c_out)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel, stride, padding, output_padding", [
    (3, 2, 1, 1), (4, 2, 1, 0), (5, 3, 2, 2),  # output = stride x input: computed phase by phase
    (5, 2, 2, 0), (3, 2, 0, 0),  # any other output: the stride-dilated input's convolution
])
def test_transposed_convolution_of_other_shapes(kernel, stride, padding, output_padding):
    conv = Conv(3, 4, kernel, stride=stride, padding=padding, output_padding=output_padding,
                transposed=True, key=KEY)
    x = np.asarray(jax.random.normal(jax.random.key(1), (6, 6, 3)), np.float64)
    expected = _np_conv_transpose(x, np.asarray(conv.weight, np.float64), stride, padding, output_padding)
    np.testing.assert_allclose(conv(jnp.asarray(x, jnp.float32)), expected + np.asarray(conv.bias),
                               rtol=1e-4, atol=1e-4)


def test_transposed_convolution_gradient_is_that_of_its_definition():
    from vnca.layers import conv2d, transposed_conv2d

    x = jax.random.normal(jax.random.key(1), (8, 8, 3))
    weight = jax.random.normal(jax.random.key(2), (5, 5, 3, 4))
    target = jax.random.normal(jax.random.key(3), (16, 16, 4))
    phased = jax.grad(lambda w, x: jnp.sum(transposed_conv2d(x, w, 2, (2, 3)) * target), (0, 1))(weight, x)
    dilated = jax.grad(lambda w, x: jnp.sum(conv2d(x, w, 1, (2, 3), input_dilation=2) * target), (0, 1))(weight, x)
    for a, b in zip(phased, dilated):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("side", [2, 4, 9])  # the patch route (<= 4x4) and lax's convolution
def test_nca_step_agrees_with_numpy(side):
    rule = UpdateRule(5, 7, 2, False, key=jax.random.key(4))
    rule = eqx.tree_at(lambda r: r.output, rule, PerCell(7, 5, key=jax.random.key(6)))
    state = np.asarray(jax.random.normal(jax.random.key(8), (side, side, 5)), np.float64)
    p = rule.perceive
    h = _np_conv(state, np.asarray(p.weight, np.float64), 1, 1) + np.asarray(p.bias)
    for block in rule.blocks:
        inner = _elu(h @ np.asarray(block.inner.weight) + np.asarray(block.inner.bias))
        h = h + inner @ np.asarray(block.outer.weight) + np.asarray(block.outer.bias)
    expected = state + h @ np.asarray(rule.output.weight) + np.asarray(rule.output.bias)
    np.testing.assert_allclose(step(rule, jnp.asarray(state, jnp.float32)), expected, rtol=1e-4, atol=1e-4)


def test_unrolled_scan_leaves_no_loop_even_for_one_step():
    from vnca.nca import scan

    def f(carry, xs, unroll):
        return scan(lambda c, x: (jnp.sin(c * x), c), carry, xs, unroll=unroll)

    compiled = jax.jit(f, static_argnums=2)
    for length in (1, 3):
        args = (jnp.linspace(0.1, 1, 3), jnp.linspace(1, 2, 3 * length).reshape(length, 3))
        unrolled, looped = (compiled.lower(*args, u).compile().as_text() for u in (True, False))
        assert "while" not in unrolled and "while" in looped
        for a, b in zip(jax.tree.leaves(compiled(*args, True)), jax.tree.leaves(compiled(*args, False))):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_perceive_in_tiles_on_a_cpu_is_the_same_convolution():
    from vnca.layers import conv2d
    from vnca.nca import compiling_for, perceive

    state = jax.random.normal(jax.random.key(1), (32, 32, 64))
    weight = jax.random.normal(jax.random.key(2), (3, 3, 64, 16)) * 0.1
    target = jax.random.normal(jax.random.key(3), (32, 32, 16))

    def convolutions(fn):
        return str(jax.make_jaxpr(fn)(weight, state)).count("conv_general_dilated")

    def loss(fn):
        return lambda w, s: jnp.sum(fn(s, w) * target)

    whole = loss(lambda s, w: conv2d(s, w, 1, (1, 1)))
    np.testing.assert_array_equal(perceive(state, weight), conv2d(state, weight, 1, (1, 1)))  # the same sums
    for a, b in zip(jax.grad(loss(perceive), (0, 1))(weight, state), jax.grad(whole, (0, 1))(weight, state)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # the weight gradient adds in another order
    assert convolutions(loss(perceive)) == 16  # 8x8 tiles on this CPU
    assert convolutions(lambda w, s: perceive(s[:16, :16], w)) == 1  # narrow grids: one convolution
    assert convolutions(lambda w, s: perceive(s[..., :32], w[:, :, :32])) == 1  # and few channels
    with compiling_for("tpu"):
        assert convolutions(loss(perceive)) == 1  # accelerators: always one


@pytest.mark.parametrize("side", [1, 2, 3])  # phases by patches (<= 2x2 cells) and by lax
@pytest.mark.parametrize("kernel, stride, padding, output_padding",
                         [(5, 2, 2, 1), (3, 1, 1, 0), (4, 3, 1, 2), (3, 2, 0, 0), (4, 2, 1, 0), (2, 3, 0, 1)])
def test_transposed_convolution_by_phases_of_small_inputs(side, kernel, stride, padding, output_padding):
    from vnca.layers import conv2d, transposed_conv2d

    conv = Conv(3, 4, kernel, stride=stride, padding=padding, output_padding=output_padding,
                transposed=True, key=KEY)
    x = np.asarray(jax.random.normal(jax.random.key(1), (side, side, 3)), np.float64)
    expected = _np_conv_transpose(x, np.asarray(conv.weight, np.float64), stride, padding, output_padding)
    np.testing.assert_allclose(conv(jnp.asarray(x, jnp.float32)), expected + np.asarray(conv.bias),
                               rtol=1e-4, atol=1e-4)
    x = jnp.asarray(x, jnp.float32)
    target = jax.random.normal(jax.random.key(3), expected.shape)
    phased = jax.grad(lambda w, x: jnp.sum(transposed_conv2d(x, w, stride, conv.padding) * target), (0, 1))
    dilated = jax.grad(lambda w, x: jnp.sum(conv2d(x, w, 1, conv.padding, input_dilation=stride) * target), (0, 1))
    for a, b in zip(phased(conv.weight, x), dilated(conv.weight, x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_rectangular_kernel_with_padding_per_axis_agrees_with_numpy():
    from vnca.layers import conv2d

    x = np.asarray(jax.random.normal(jax.random.key(1), (5, 6, 3)), np.float64)
    weight = np.asarray(jax.random.normal(jax.random.key(2), (3, 2, 3, 4)), np.float64)
    padded = np.pad(x, ((1, 2), (0, 1), (0, 0)))
    expected = np.stack([np.stack([np.einsum("yxi,yxio->o", padded[i:i + 3, j:j + 2], weight)
                                   for j in range(padded.shape[1] - 1)]) for i in range(padded.shape[0] - 2)])
    for cells in (0, 10**6):  # lax's convolution, and the patch route
        out = conv2d(jnp.asarray(x, jnp.float32), jnp.asarray(weight, jnp.float32), 1, ((1, 2), (0, 1)),
                     patch_cells=cells)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

"""The pool and the damage of the non-doubling VNCA's training."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vnca.nondoubling import NonDoublingConfig, nondoubling_vnca
from vnca.pool import (Pool, damage, empty_pool, pool_groups, pool_rows, pooled_batch_elbo, pooled_rows,
                       return_to_pool, state_overflow)
from vnca.vae import batch_elbo, kl_to_standard_normal

CONFIG = NonDoublingConfig(latent=8, hidden=8, min_steps=2, max_steps=4, test_steps=3)


def test_damage_zeroes_one_half_size_square_in_every_channel():
    state = jnp.ones((32, 32, 5))
    corners = set()
    for key in jax.random.split(jax.random.key(0), 400):
        out = np.asarray(damage(state, key))
        zero = out == 0
        assert (zero.all(axis=-1) == zero.any(axis=-1)).all(), "a damaged cell keeps some channels"
        rows, cols = np.nonzero(zero[..., 0])
        assert zero[..., 0].sum() == 16 * 16
        top, left = rows.min(), cols.min()
        assert rows.max() - top == 15 and cols.max() - left == 15  # one contiguous 16x16 square
        assert (out[~zero] == 1).all()
        corners.add((int(top), int(left)))
    tops, lefts = {t for t, _ in corners}, {left for _, left in corners}
    assert tops == set(range(17)) and lefts == set(range(17)), "every position 0..16 is reachable"


def test_half_the_rows_come_from_the_pool_and_a_quarter_are_damaged():
    from_pool, damaged = pool_rows(128)
    assert int(from_pool.sum()) == 64 and int(damaged.sum()) == 32
    assert not bool((damaged & ~from_pool).any())


@pytest.fixture(scope="module")
def model():
    return nondoubling_vnca(CONFIG, key=jax.random.key(1))


def _batch(n, seed=0):
    return (jax.random.uniform(jax.random.key(seed), (n, 32, 32)) > 0.5).astype(jnp.float32)


def test_an_empty_pool_changes_nothing(model):
    x = _batch(8)
    key = jax.random.key(2)
    plain = batch_elbo(model, x, key, steps=3)
    pooled, finals, targets, used = pooled_batch_elbo(model, empty_pool(16, CONFIG), x, key,
                                                      jax.random.key(3), 3)
    np.testing.assert_allclose(pooled, plain, rtol=1e-6)
    np.testing.assert_array_equal(targets, x)
    assert float(used) == 0.0 and finals.shape == (8, 32, 32, CONFIG.latent)


def _full_pool(size, seed=5):
    keys = jax.random.split(jax.random.key(seed), 2)
    return Pool(_batch(size, seed), jax.random.normal(keys[1], (size, 32, 32, CONFIG.latent)),
                jnp.ones(size, bool))


def test_pool_rows_start_from_their_stored_state_and_target(model):
    # The update rule's last layer starts at zero, so an untrained NCA leaves its start state as it is:
    # a pool row's final state is its stored state, damaged or not.
    x, pool = _batch(8), _full_pool(16)
    _, finals, targets, used = pooled_batch_elbo(model, pool, x, jax.random.key(2), jax.random.key(3), 3)
    from_pool, damaged = pool_rows(8)
    assert float(used) == 0.5
    for row in range(8):
        slot = row * 2  # pool 16, batch 8: every second slot
        if from_pool[row]:
            np.testing.assert_array_equal(targets[row], pool.targets[slot])
            stored = np.asarray(pool.states[slot])
            zero = np.asarray(finals[row]) == 0
            if damaged[row]:
                assert zero[..., 0].sum() == 256 and zero.all(axis=-1).sum() == 256
            np.testing.assert_array_equal(np.asarray(finals[row])[~zero], stored[~zero])
        else:
            np.testing.assert_array_equal(targets[row], x[row])


def test_the_encoder_gets_only_the_kl_gradient_of_pool_rows(model):
    pool = _full_pool(8)
    x = _batch(8, seed=9)
    from_pool, _ = pool_rows(8)
    # Trained a little so that the reconstruction term depends on the decoder's output.
    model = eqx.tree_at(lambda m: m.decoder.rule.output.weight, model,
                        0.01 * jax.random.normal(jax.random.key(4), model.decoder.rule.output.weight.shape))
    rows = jnp.flatnonzero(from_pool)

    def pooled_loss(encoder):
        m = eqx.tree_at(lambda m: m.encoder, model, encoder)
        terms, *_ = pooled_batch_elbo(m, pool, x, jax.random.key(2), jax.random.key(3), 3)
        return -terms.elbo * 8

    def kl_only(encoder):
        # What the encoder should see: the KL of each pool row's target, and the whole ELBO of the
        # other rows (computed as `elbo` computes it, with the same per-row keys).
        m = eqx.tree_at(lambda m: m.encoder, model, encoder)
        kl = jax.vmap(lambda t: kl_to_standard_normal(*m.encoder(t)))(_slots(pool.targets, 8)[rows]).sum()
        per_row = _per_row_elbo(m, x, jax.random.key(2))
        return kl - per_row[~np.asarray(from_pool)].sum()

    g_pooled = jax.tree.leaves(eqx.filter_grad(pooled_loss)(model.encoder))
    g_expected = jax.tree.leaves(eqx.filter_grad(kl_only)(model.encoder))
    for a, b in zip(g_pooled, g_expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def test_detached_pool_kl_keeps_the_values_and_cuts_pool_rows_off_the_encoder(model):
    from vnca.pool import detached_pool_kl, pooled_elbos

    pool = _full_pool(8)
    x = _batch(8, seed=9)
    model = eqx.tree_at(lambda m: m.decoder.rule.output.weight, model,
                        0.01 * jax.random.normal(jax.random.key(4), model.decoder.rule.output.weight.shape))
    from_pool, _ = pool_rows(8)
    rows = pooled_rows(pool, x, jax.random.key(2), jax.random.key(3))

    def loss(encoder, detach):
        m = eqx.tree_at(lambda m: m.encoder, model, encoder)
        terms = pooled_elbos(m, rows, 3)[0]
        terms = detached_pool_kl(terms, rows[3]) if detach else terms
        return -terms.elbo.sum(), terms

    (_, paper), _ = eqx.filter_value_and_grad(loss, has_aux=True)(model.encoder, False)
    (_, detached), g = eqx.filter_value_and_grad(loss, has_aux=True)(model.encoder, True)
    for a, b in zip(paper, detached):  # the same numbers: the run reports the paper's ELBO
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    # and the encoder learns from the other rows' ELBO alone
    expected = eqx.filter_grad(lambda e: -_per_row_elbo(eqx.tree_at(lambda m: m.encoder, model, e), x,
                                                        jax.random.key(2))[~np.asarray(from_pool)].sum())
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(expected(model.encoder))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def _slots(array, b):
    return array.reshape(b, -1, *array.shape[1:])[:, 0]


def _per_row_elbo(model, x, key):
    from vnca.vae import elbo

    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(elbo, in_axes=(None, 0, 0, None))(model, x, keys, 3).elbo


def test_return_to_pool_overwrites_the_batch_slots_then_shuffles():
    size, b = 16, 4
    pool = Pool(jnp.arange(size, dtype=jnp.float32)[:, None, None] * jnp.ones((size, 32, 32)),
                jnp.arange(size, dtype=jnp.float32)[:, None, None, None] * jnp.ones((size, 32, 32, 2)),
                jnp.zeros(size, bool).at[:3].set(True))
    new = 100 + jnp.arange(b, dtype=jnp.float32)
    out = return_to_pool(pool, new[:, None, None] * jnp.ones((b, 32, 32)),
                         new[:, None, None, None] * jnp.ones((b, 32, 32, 2)), jax.random.key(0))
    ids = np.asarray(out.targets[:, 0, 0])
    expected = set(range(size)) - {0, 4, 8, 12} | {100, 101, 102, 103}
    assert set(ids.tolist()) == expected  # slots 0, 4, 8, 12 replaced, nothing else lost
    np.testing.assert_array_equal(out.states[:, 0, 0, 0], ids)  # states travel with their targets
    assert int(out.filled.sum()) == 4 + 2  # the batch, plus slots 1 and 2 that were filled before
    assert ids.tolist() != sorted(ids.tolist()), "the pool was not shuffled"
    # a batch of 4 is one run of the rows' pattern: one group, the whole pool shuffled
    assert pool_groups(size, b) == 1
    again = return_to_pool(pool, new[:, None, None] * jnp.ones((b, 32, 32)),
                           new[:, None, None, None] * jnp.ones((b, 32, 32, 2)), jax.random.key(0))
    np.testing.assert_array_equal(again.targets, out.targets)  # the same key, the same order


def test_the_pool_is_shuffled_in_groups_that_keep_their_rows_and_whole_row_patterns():
    # at most 8 groups, each with whole runs of the 4-row pattern, 1 where the batch has none
    assert [pool_groups(p, b) for p, b in [(1024, 128), (128, 8), (16, 4), (32, 12), (64, 32), (128, 6)]] == \
        [8, 2, 1, 1, 8, 1]
    for size, b in [(1024, 128), (128, 8), (64, 32), (32, 16)]:
        groups = pool_groups(size, b)
        from_pool, damaged = (np.asarray(r) for r in pool_rows(b))
        for g in range(groups):  # the rows that meet group g's slots: all three kinds among them
            rows = np.arange(b)[np.arange(b) * (size // b) // (size // groups) == g]
            assert len(rows) == b // groups and (~from_pool[rows]).any() and (from_pool[rows] & ~damaged[rows]).any() \
                and damaged[rows].any(), (size, b, g, rows)
    size, b = 32, 8  # 2 groups of 16 slots: an entry stays in its group, so a group stays on its device
    pool = Pool(jnp.arange(size, dtype=jnp.float32)[:, None, None] * jnp.ones((size, 32, 32)),
                jnp.zeros((size, 32, 32, 2)), jnp.ones(size, bool))
    new = 100 + jnp.arange(b, dtype=jnp.float32)
    out = return_to_pool(pool, new[:, None, None] * jnp.ones((b, 32, 32)), jnp.zeros((b, 32, 32, 2)),
                         jax.random.key(0))
    ids = np.asarray(out.targets[:, 0, 0])
    for g in range(2):
        old = set(range(16 * g, 16 * g + 16)) - {16 * g + 4 * r for r in range(4)}
        assert set(ids[16 * g:16 * g + 16].tolist()) == old | {100 + 4 * g + r for r in range(4)}


@pytest.mark.parametrize("size, b", [(128, 8), (16, 8), (64, 16)])
def test_pool_rows_keep_meeting_fresh_images(size, b):
    # Images numbered as they arrive, a model that returns its start: after the pool has filled, the
    # targets that pool rows read must keep coming from fresh images. (Groups of one row each froze
    # them at the first 64 images a 128-entry pool saw, at a batch of 8.)
    pool = Pool(jnp.zeros((size, 1, 1)), jnp.zeros((size, 1, 1, 1)), jnp.zeros(size, bool))

    @jax.jit
    def step(pool, x, key):
        rows = pooled_rows(pool, x, key, key)
        targets = jnp.where(rows[3][:, None, None], rows[1], x)
        return return_to_pool(pool, targets, targets[..., None], key), targets[:, 0, 0], rows[3]

    read = []
    for s in range(400):
        pool, targets, from_pool = step(pool, (s * b + jnp.arange(b, dtype=jnp.float32))[:, None, None],
                                        jax.random.key(s))
        if s >= 200:
            read += np.asarray(targets)[np.asarray(from_pool)].tolist()
    read = np.array(read)
    assert len(read) == 200 * b // 2  # every pool row was served from the pool
    assert (read >= 200 * b).mean() > 0.5, "pool rows keep reading the images of the pool's first fill"
    assert len(set(read.tolist())) > 2 * size  # more than twice the images the pool holds


def test_a_pattern_with_fewer_seed_rows_keeps_pool_entries_running_longer():
    # Each state counts the batches it has been through; pool rows continue theirs, seed rows start
    # at 1. The paper's pattern (half the rows from seeds) retires an entry after 2 passes on
    # average; one seed row in 8 after 8, and the entries still come from fresh images.
    def passes(pattern, size=128, b=8):
        pool = Pool(jnp.zeros((size, 1, 1)), jnp.zeros((size, 1, 1, 1)), jnp.zeros(size, bool))

        @jax.jit
        def step(pool, x, key):
            rows = pooled_rows(pool, x, key, key, pattern=pattern)
            ages = jnp.where(rows[3], rows[2][:, 0, 0, 0], 0.0) + 1
            targets = jnp.where(rows[3][:, None, None], rows[1], x)
            pool = return_to_pool(pool, targets, ages[:, None, None, None] * jnp.ones((b, 1, 1, 1)), key,
                                  pattern=pattern)
            return pool, ages, rows[3]

        retired = []
        for i in range(600):
            x = (i * b + jnp.arange(b, dtype=jnp.float32))[:, None, None]
            pool, ages, from_pool = step(pool, x, jax.random.key(i))
            if i >= 300:
                retired += np.asarray(ages)[np.asarray(from_pool)].tolist()
        return np.mean(retired), np.asarray(pool.targets[:, 0, 0])

    paper, _ = passes("SPSD")
    long, targets = passes("SPPDPPPD")
    assert 2 < paper < 4 and long > 2.5 * paper, (paper, long)
    assert (targets >= 300 * 8).mean() > 0.5  # the pool still renews itself from fresh images
    from_pool, damaged = (np.asarray(r) for r in pool_rows(16, "SPPDPPPD"))
    assert from_pool.sum() == 14 and damaged.sum() == 4


def test_without_damage_pool_rows_start_from_their_stored_state_intact(model):
    x, pool = _batch(8), _full_pool(16)
    _, finals, _, used = pooled_batch_elbo(model, pool, x, jax.random.key(2), jax.random.key(3), 3,
                                          with_damage=False)
    from_pool, _ = pool_rows(8)
    assert float(used) == 0.5
    for row in np.flatnonzero(from_pool):  # untrained rule: the final state is the start state
        np.testing.assert_array_equal(finals[row], pool.states[row * 2])


def test_the_no_damage_ablation_needs_a_pool_and_trains_from_the_command_line(tmp_path, data_dir):
    from conftest import vnca_command
    from vnca.recipes import train_config
    from vnca.runs import load_run

    with pytest.raises(ValueError, match="damage=False needs a pool"):
        train_config("nondoubling", "smoke", pool_size=0, damage=False)
    assert train_config("nondoubling", "smoke").damage  # the paper's: damage
    done = vnca_command("train", "--model", "nondoubling", "--profile", "smoke", "--steps", "5", "--no-damage",
                        "--no-progress", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    state, config = load_run(tmp_path / "run" / "checkpoint.vnca")
    assert int(state.step) == 5 and config.pool_size and not config.damage


def test_pool_configuration_errors_are_clear():
    from vnca.recipes import train_config

    with pytest.raises(ValueError, match="only the non-doubling model trains with a pool"):
        train_config("doubling", "smoke", pool_size=32)
    with pytest.raises(ValueError, match=r"pool_size \(30\) must be a multiple of batch_size \(8\)"):
        train_config("nondoubling", "smoke", pool_size=30)
    with pytest.raises(ValueError, match="batch_size must be a multiple of 4"):
        train_config("nondoubling", "smoke", batch_size=6, pool_size=36)
    with pytest.raises(ValueError, match="batch_size must be a multiple of 8"):
        train_config("nondoubling", "smoke", pool_pattern="SPPDPPPD", batch_size=4, pool_size=32)
    with pytest.raises(ValueError, match="with at least one S"):
        train_config("nondoubling", "smoke", pool_pattern="PPPD")
    with pytest.raises(ValueError, match="pool_pattern is made of S"):
        train_config("nondoubling", "smoke", pool_pattern="SPXD")
    with pytest.raises(ValueError, match="pool_size must be 0"):
        train_config("nondoubling", "smoke", pool_size=-8)
    assert train_config("nondoubling", "full").pool_size == 1024
    assert train_config("nondoubling", "smoke", pool_size=0).pool_size == 0


def test_state_overflow_counts_only_hidden_channels_beyond_the_bound():
    finals = jnp.zeros((2, 4, 4, 3))
    finals = finals.at[0, 0, 0, 0].set(100.0)  # a logit: never penalised
    finals = finals.at[0, 1, 1, 1].set(5.0)  # 2 beyond +3
    finals = finals.at[1, 2, 2, 2].set(-4.0)  # 1 beyond -3
    finals = finals.at[1, 3, 3, 1].set(2.9)  # inside
    assert float(state_overflow(finals)) == pytest.approx((2.0 + 1.0) / 2)


def test_state_penalty_enters_the_loss_and_needs_a_pool():
    import dataclasses

    from vnca.recipes import train_config
    from vnca.step import init_state, train_step

    with pytest.raises(ValueError, match="state_penalty must be 0, or positive with a pool"):
        train_config("nondoubling", "smoke", pool_size=0, state_penalty=1.0)
    with pytest.raises(ValueError, match="state_penalty must be 0"):
        train_config("nondoubling", "smoke", state_penalty=-1.0)
    base = train_config("nondoubling", "smoke", model_config=CONFIG, batch_size=4, pool_size=8)
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 2, (4, 32, 32)), jnp.float32)
    state = init_state(base)
    # Fill the pool with states far outside the bound, so that the pool rows carry overflow.
    state = eqx.tree_at(lambda s: (s.pool.states, s.pool.filled), state,
                        (jnp.full_like(state.pool.states, 10.0), jnp.ones_like(state.pool.filled)))
    _, without = train_step(base, state, batch)
    _, penalised = train_step(dataclasses.replace(base, state_penalty=0.5), state, batch)
    assert float(without["overflow"]) > 0
    assert float(penalised["overflow"]) == pytest.approx(float(without["overflow"]))
    assert float(penalised["loss"]) == pytest.approx(float(without["loss"]) + 0.5 * float(without["overflow"]), rel=1e-5)


def test_grown_for_long_runs_the_decoder_and_damages_once(model):
    from vnca.nca import run
    from vnca.pool import grown_for_long
    from vnca.vae import bernoulli_log_likelihood

    # Untrained, the update rule is zero; perturb it so that the steps change the grid.
    leaves, tree = jax.tree.flatten(model)
    noise = jax.random.split(jax.random.key(9), len(leaves))
    model = jax.tree.unflatten(tree, [leaf + 0.05 * jax.random.normal(k, leaf.shape)
                                      if eqx.is_inexact_array(leaf) else leaf for leaf, k in zip(leaves, noise)])
    x = _batch(3)
    hit, hit_means = grown_for_long(model, x, jax.random.key(4), steps=12, damage_at=5)
    kept, kept_means = grown_for_long(model, x, jax.random.key(4), steps=12, damage_at=None)
    assert hit.shape == (3, 12) and hit_means.shape == (3, 12, 32, 32)
    # Without damage: the decoder's own steps from the encoder mean, scored after each.
    z = jax.vmap(model.encoder)(x)[0]
    for i in range(3):
        _, states = run(model.decoder.rule, model.decoder.seed(z[i]), 12, trajectory=True)
        np.testing.assert_allclose(kept_means[i], jax.nn.sigmoid(states[..., 0]), atol=1e-5)
        np.testing.assert_allclose(kept[i], jax.vmap(bernoulli_log_likelihood, (0, None))(states[..., 0], x[i]),
                                   rtol=1e-5)
    # With damage: the same up to step 4; at step 5 one 16x16 square is zeroed (p = 1/2); then it differs.
    np.testing.assert_array_equal(hit[:, :4], kept[:, :4])
    square = np.asarray(hit_means[:, 4] == 0.5) & np.asarray(kept_means[:, 4] != 0.5)
    assert [int(s.sum()) for s in square] == [256] * 3
    assert not np.allclose(hit[:, 5:], kept[:, 5:])
    with pytest.raises(ValueError, match="runs a non-doubling decoder; this model has a DoublingDecoder"):
        from vnca.doubling import DoublingConfig, doubling_vnca
        grown_for_long(doubling_vnca(DoublingConfig(latent=8, hidden=8), key=jax.random.key(0)), x,
                       jax.random.key(4), steps=3)

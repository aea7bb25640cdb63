"""Every exercise checker accepts the book's answer and rejects typical wrong ones, saying why."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vnca import exercises
from vnca.data import pad
from vnca.doubling import double
from vnca.exercises import CheckFailed
from vnca.nca import step
from vnca.pool import damage
from vnca.step import optimiser
from vnca.vae import kl_to_standard_normal


def _wrong_damage_channel_0(state, key):
    return state.at[..., 0].set(damage(state, key)[..., 0])


def _damage_short_range(state, key):
    top, left = jax.random.randint(key, (2,), 0, 16)  # one short of 16
    rows, cols = jnp.arange(32)[:, None], jnp.arange(32)[None, :]
    inside = (rows >= top) & (rows < top + 16) & (cols >= left) & (cols < left + 16)
    return jnp.where(inside[..., None], 0.0, state)


def _step_per_channel_mask(rule, state, key, p):
    return state + jax.random.bernoulli(key, p, state.shape) * rule(state)


CASES = {
    "check_pad": (pad, [
        (lambda x: np.pad(x, ((0, 0), (0, 4), (0, 4))), "the digit sits at rows 0..27"),
        (lambda x: np.pad(x, ((0, 0), (2, 2), (0, 0))), "has shape (3, 32, 28)"),
        (lambda x: np.pad(1 - x, ((0, 0), (2, 2), (2, 2))), "does not appear unchanged"),
    ]),
    "check_kl": (kl_to_standard_normal, [
        (lambda m, s: 0.5 * jnp.sum(m**2 + jnp.exp(s) - 1 - s), "the variance is exp(2 * log_scale)"),
        (lambda m, s: 0.5 * (m**2 + jnp.exp(2 * s) - 1 - 2 * s), "expected a single number"),
        (lambda m, s: 0.5 * jnp.sum(m**2 + jnp.exp(2 * s) - 2 * s), "not 0"),
    ]),
    "check_step": (step, [
        (lambda rule, state, key, p: rule(state), "state + rule(state)"),
        (_step_per_channel_mask, "only some of their channels"),
        (lambda rule, state, key, p: state + jax.random.bernoulli(key, p**3, state.shape[:-1] + (1,))
         * rule(state), "of the cells were updated"),
        (lambda rule, state, key, p: state + (1 - jax.random.bernoulli(key, p, state.shape[:-1] + (1,)))
         * rule(state), "not by 1 - mask"),  # inverted: at p = 1 nothing moves
    ]),
    "check_doubling": (double, [
        (lambda s: jnp.tile(s, (2, 2, 1)), "the grid was tiled"),
        (lambda s: jnp.zeros((2 * s.shape[0], 2 * s.shape[1], s.shape[2])).at[::2, ::2].set(s),
         "the other three are not copies"),
        (lambda s: jnp.repeat(s, 2, axis=0), "expected (8, 6, 5)"),
        (lambda s: jax.lax.stop_gradient(jnp.repeat(jnp.repeat(s, 2, 0), 2, 1)), "the gradient"),
        (lambda s: jnp.asarray(np.repeat(np.repeat(np.asarray(s), 2, 0), 2, 1)),
         "use jax.numpy (jnp.repeat) instead of NumPy"),  # right values, no gradient
    ]),
    "check_optimiser": (lambda: optimiser(), [
        (lambda: optax.chain(optax.adam(1e-4), optax.clip_by_global_norm(10.0)), "clip first, then Adam"),
        (lambda: optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-3)), "the learning rate should be 1e-4"),
        (lambda: optax.chain(optax.clip(10.0), optax.adam(1e-4)), "each element of the gradient was clipped"),
    ]),
    "check_damage": (damage, [
        (_wrong_damage_channel_0, "kept some of their channels"),
        (_damage_short_range, "every position 0..16 should be possible"),
        (lambda state, key: state.at[:8, :8].set(0.0), "expected one 16 x 16 square"),
    ]),
    "check_bound": (lambda w: jax.scipy.special.logsumexp(w) - jnp.log(w.shape[0]), [
        (lambda w: jnp.mean(w), "that is the ELBO"),
        (lambda w: jax.scipy.special.logsumexp(w), "subtract log K"),
        (lambda w: jnp.log(jnp.mean(jnp.exp(w))), "subtract the largest log-weight"),
    ]),
    "check_interpolation": (lambda a, b, n: a + jnp.linspace(0, 1, n)[:, None] * (b - a), [
        (lambda a, b, n: a + jnp.linspace(0, 1, n, endpoint=False)[:, None] * (b - a), "the last point is not b"),
        (lambda a, b, n: a + (jnp.linspace(0, 1, n)[:, None] ** 2) * (b - a), "evenly spaced"),
        (lambda a, b, n: jnp.stack([a, b]), "expected (8, 6)"),
    ]),
}


def test_every_checker_is_tested():
    assert {name for name in dir(exercises) if name.startswith("check_")} == set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_checker_accepts_the_books_answer(name, capsys):
    reference, _ = CASES[name]
    assert getattr(exercises, name)(reference) is True
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("name, index", [(n, i) for n, (_, wrong) in CASES.items() for i in range(len(wrong))])
def test_checker_explains_a_wrong_answer(name, index):
    wrong, message = CASES[name][1][index]
    with pytest.raises(CheckFailed) as failure:
        getattr(exercises, name)(wrong)
    text = str(failure.value)
    assert message in text, text
    assert "\nHint: " in text  # says what to do, not only that it failed


def test_slow_doubling_is_caught():
    import time

    def host(x):  # right, but 50 ms a call
        time.sleep(0.05)
        return np.repeat(np.repeat(np.asarray(x), 2, 0), 2, 1)

    @jax.custom_vjp
    def slow(s):
        shape = jax.ShapeDtypeStruct((2 * s.shape[0], 2 * s.shape[1], s.shape[2]), s.dtype)
        return jax.pure_callback(host, shape, s)

    def backward(_, g):
        return (g.reshape(g.shape[0] // 2, 2, g.shape[1] // 2, 2, g.shape[2]).sum(axis=(1, 3)),)

    slow.defvjp(lambda s: (slow(s), None), backward)
    with pytest.raises(CheckFailed, match="takes .* ms, the book's"):
        exercises.check_doubling(slow)


def test_messages_show_plain_numbers():
    with pytest.raises(CheckFailed) as failure:
        exercises.check_kl(lambda m, s: 0.5 * jnp.sum(m**2 + jnp.exp(s) - 1 - s))
    assert "np.float" not in str(failure.value) and "Array(" not in str(failure.value), str(failure.value)

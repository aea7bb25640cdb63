"""The changes under test in issue 33's runs, patched into vnca (see run.py). `apply(args)`
with the arguments a run was started with (saved in its folder as claims-args.json), so that
its checkpoint loads the same way when it is evaluated or measured."""
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import vnca.nca
import vnca.pool
import vnca.step as step
import vnca.train as train


def saved(run) -> SimpleNamespace | None:
    path = Path(run) / "claims-args.json"
    if Path(run).is_file():
        path = Path(run).parent / "claims-args.json"
    return SimpleNamespace(**json.loads(path.read_text())) if path.exists() else None


def apply(a, steps: int):
    if a.schedule == "cosine":  # what vnca's final_learning_rate and decay_steps now do
        step.config_optimiser = lambda config: step.optimiser(
            config.learning_rate, config.clip_norm, steps, config.learning_rate * a.final_lr)

    if a.pool_fresh != 4:
        def pool_rows(batch_size, pattern=None):  # vnca's pool_pattern "SPPDPPPD" for 1
            i = jnp.arange(batch_size)
            return i % 8 >= a.pool_fresh, i % 4 == 3
        vnca.pool.pool_rows = pool_rows
        vnca.pool.pool_groups = lambda pool_size, batch_size, pattern=None: 1

    if a.pool_kl == "detached":
        from vnca.vae import Terms
        paper_pooled_elbo = vnca.pool.pooled_elbo

        def pooled_elbo(model, x, stored_target, stored_state, from_pool, *rest):
            terms, final, target = paper_pooled_elbo(model, x, stored_target, stored_state,
                                                     from_pool, *rest)
            kl = jnp.where(from_pool, jax.lax.stop_gradient(terms.kl), terms.kl)
            return Terms(terms.log_likelihood - kl, terms.log_likelihood, kl), final, target
        vnca.pool.pooled_elbo = pooled_elbo

    if getattr(a, "seed_probability", None):  # runs before this flag have no such field
        plain_rows, chance = vnca.pool.pooled_rows, a.seed_probability

        def pooled_rows(pool, x, key, damage_key, with_damage=True, pattern=None):
            """Every row continues a pool entry (damaged: every 4th) but for a random
            `chance` of rows, which start from a seed: entries live 1/chance visits."""
            rows = plain_rows(pool, x, key, damage_key, with_damage, "PPPD")
            fresh = jax.random.uniform(jax.random.fold_in(damage_key, 7), (x.shape[0],)) < chance
            return rows[:3] + (rows[3] & ~fresh, rows[4] & ~fresh) + rows[5:]
        vnca.pool.pooled_rows = pooled_rows
        vnca.step.pooled_rows = pooled_rows  # the step imports it by name

    if getattr(a, "pool_noise", None):  # runs before this flag have no such field
        noisy_from, sigma = vnca.pool.pooled_rows, a.pool_noise

        def pooled_rows(pool, x, key, damage_key, with_damage=True, pattern=None):
            """Every stored state taken from the pool gets Gaussian noise of std `sigma` in
            every channel: a small push off the grown digit, which the rule must pull back."""
            rows = noisy_from(pool, x, key, damage_key, with_damage, pattern) if pattern else \
                noisy_from(pool, x, key, damage_key, with_damage)
            noise = sigma * jax.random.normal(jax.random.fold_in(damage_key, 13), rows[2].shape)
            return rows[:2] + (rows[2] + noise,) + rows[3:]
        vnca.pool.pooled_rows = pooled_rows
        vnca.step.pooled_rows = pooled_rows

    if getattr(a, "seed_write", None):  # runs before this flag have no such field
        plain_return, chance = vnca.pool.return_to_pool, a.seed_write

        def return_to_pool(pool, targets, finals, key, sharding=None, pattern=vnca.pool.PAPER_PATTERN):
            """A seed row's grown state replaces its slot's entry only with probability
            `chance` (always while the slot is empty): entries live longer, while the batch
            still grows as many rows from seeds."""
            b = targets.shape[0]
            pool_row, _ = vnca.pool.pool_rows(b, pattern)
            old_targets = vnca.pool._slots(pool.targets, b)
            old_states = vnca.pool._slots(pool.states, b)
            lucky = jax.random.uniform(jax.random.fold_in(key, 11), (b,)) < chance
            write = pool_row | ~vnca.pool._slots(pool.filled, b) | lucky
            targets = jnp.where(write[:, None, None], targets, old_targets)
            finals = jnp.where(write[:, None, None, None], finals, old_states)
            return plain_return(pool, targets, finals, key, sharding, pattern)
        vnca.pool.return_to_pool = return_to_pool
        vnca.step.return_to_pool = return_to_pool  # the step imports it by name

    if getattr(a, "worst_out", None):  # runs before this flag have no such field
        from vnca.vae import bernoulli_log_likelihood
        inner_return = vnca.pool.return_to_pool

        def return_to_pool(pool, targets, finals, key, sharding=None, pattern=vnca.pool.PAPER_PATTERN):
            """Growing NCA's pool (Mordvintsev et al. 2020): the batch's worst pool row (lowest
            log p of its stored target at its final grid) is replaced by the seed row's freshly
            grown state and target, so that entries that stay good live on and those the rule
            has lost are grown anew; the rest as before (with --seed-write, the seed row's own
            slot mostly keeps its entry)."""
            b = targets.shape[0]
            pool_row, _ = vnca.pool.pool_rows(b, pattern)
            scores = jax.vmap(bernoulli_log_likelihood)(finals[..., 0], targets)
            worst = jnp.argmin(jnp.where(pool_row, scores, jnp.inf))
            seed = jnp.argmin(pool_row)  # the first row grown from a seed
            targets = targets.at[worst].set(targets[seed])
            finals = finals.at[worst].set(finals[seed])
            return inner_return(pool, targets, finals, key, sharding, pattern)
        vnca.pool.return_to_pool = return_to_pool
        vnca.step.return_to_pool = return_to_pool

    if getattr(a, "rest_penalty", None):  # runs before this flag have no such field
        from vnca.vae import Terms
        inner, weight = vnca.pool.pooled_elbo, a.rest_penalty

        def pooled_elbo(model, *args):
            """The ELBO less `weight` times the squared update the rule proposes at the final
            grid (summed over cells and channels): a grown digit should be at rest."""
            terms, final, target = inner(model, *args)
            # in the reconstruction term, as `detached_pool_kl` rebuilds the ELBO from the
            # two terms: the logged terms include it (measure.py measures without it)
            rest = weight * jnp.sum(model.decoder.rule(final) ** 2)
            return Terms(terms.elbo - rest, terms.log_likelihood - rest, terms.kl), final, target
        vnca.pool.pooled_elbo = pooled_elbo

    if getattr(a, "clip_hidden", None):  # runs before this flag have no such field
        plain_step, bound = vnca.nca.step, a.clip_hidden

        logits = getattr(a, "clip_logits", None)  # runs before this flag have no such field

        def clipped_step(rule, state, key=None, update_probability=1.0, active=None):
            new = plain_step(rule, state, key, update_probability, active)
            new = new.at[..., 1:].set(jnp.clip(new[..., 1:], -bound, bound))
            if logits:
                new = new.at[..., 0].set(jnp.clip(new[..., 0], -logits, logits))
            return new
        vnca.nca.step = clipped_step
        vnca.pool.step = clipped_step  # the pool's regrowth measurements step too

    if getattr(a, "leak", None):  # runs before this flag have no such field
        inner_step, leak = vnca.nca.step, a.leak

        def leaky_step(rule, state, key=None, update_probability=1.0, active=None):
            """s + m * f(s) - leak * s: every cell decays towards zero at every step, which
            shifts the linearised step's spectrum by -leak: a slow mode the rule never saw in
            training (the growth after thousands of steps) is damped unless f feeds it. Written
            as a subtraction: the product (1 - leak) (s + m * f(s)) compiles three times as
            long and its training step runs 20 times slower (3.76 s against 0.19, entry 23)."""
            decay = leak * state
            if active is not None:
                decay = decay * jnp.asarray(active, state.dtype)
            return inner_step(rule, state, key, update_probability, active) - decay
        vnca.nca.step = leaky_step
        vnca.pool.step = leaky_step

    if getattr(a, "contract", None):  # runs before this flag have no such field
        from vnca.nca import run
        from vnca.vae import Terms
        inner, weight, horizon = vnca.pool.pooled_elbo, a.contract, a.contract_steps

        def pooled_elbo(model, x, stored_target, stored_state, from_pool, damaged, key,
                        damage_key, steps):
            """The ELBO less `weight` times how much a small random difference of the final
            grid has grown after `horizon` more steps beyond no growth, squared: the grown
            digit should be a stable state of the rule, not one with a slowly growing mode
            (entry 22: about 1% a step, from about 32 steps on). Both runs take the same
            random updates; the gradient reaches the rule, not the growth before."""
            terms, final, target = inner(model, x, stored_target, stored_state, from_pool,
                                         damaged, key, damage_key, steps)
            rule, base = model.decoder.rule, jax.lax.stop_gradient(final)
            probe_key, mask_key = jax.random.split(jax.random.fold_in(key, 33))
            nudge = 0.05 * jax.random.normal(probe_key, base.shape)
            ran = [run(rule, s, horizon, key=mask_key,
                       update_probability=model.decoder.config.update_probability)
                   for s in (base, base + nudge)]
            growth = jnp.linalg.norm(ran[1] - ran[0]) / jnp.linalg.norm(nudge)
            penalty = weight * jnp.maximum(growth - 1, 0) ** 2
            return (Terms(terms.elbo - penalty, terms.log_likelihood - penalty, terms.kl),
                    final, target)
        vnca.pool.pooled_elbo = pooled_elbo

    if getattr(a, "extend", None):  # runs before this flag have no such field
        from vnca.nca import run
        from vnca.vae import Terms, bernoulli_log_likelihood
        inner, more = vnca.pool.pooled_elbo, a.extend

        def pooled_elbo(model, x, stored_target, stored_state, from_pool, damaged, key,
                        damage_key, steps):
            """Each row's grid grown `more` steps past its T, the gradient through all of
            them, and its log-likelihood the mean of the two, at T and at T + `more`: the
            rule is trained on what its own steps do to the digit over a horizon of 3 to 9
            times training's T at `more` = 128 to 512 (entries 22, 28: the digit is lost to a drift over hundreds to
            thousands of steps, which T = 56..80 does not see). The longer-grown grid goes
            back to the pool, so entries age T + `more` steps a visit."""
            terms, final, target = inner(model, x, stored_target, stored_state, from_pool,
                                         damaged, key, damage_key, steps)
            decoder = model.decoder
            later = run(decoder.rule, final, more, key=jax.random.fold_in(key, 41),
                        update_probability=decoder.config.update_probability,
                        remat=decoder.config.remat)
            ll = (terms.log_likelihood + bernoulli_log_likelihood(later[..., 0], target)) / 2
            return Terms(ll - terms.kl, ll, terms.kl), later, target
        vnca.pool.pooled_elbo = pooled_elbo

    if a.warm:
        from vnca.runs import CHECKPOINT, load_run
        plain_init = train.init_state  # what `fit` starts a new run with

        def init_state(config):
            state = plain_init(config)
            if Path(a.warm).exists():
                model = load_run(Path(a.warm) / CHECKPOINT)[0].model
            else:
                from vnca import pretrained
                model = pretrained.load(a.warm)
            leaves, fresh = jax.tree.leaves(model), jax.tree.leaves(state.model)
            if getattr(a, "widen", False):  # runs before this flag have no such field
                leaves = [widened(old, new) for old, new in zip(leaves, fresh, strict=True)]
            if [x.shape for x in leaves] != [x.shape for x in fresh]:
                raise ValueError(f"--warm {a.warm}: other shapes than this model's")
            return eqx.tree_at(lambda s: s.model, state,
                               jax.tree.unflatten(jax.tree.structure(state.model), leaves))
        train.init_state = init_state


def widened(old: jax.Array, new: jax.Array) -> jax.Array:
    """`old` written into the leading corner of the freshly initialised `new` (every axis at
    least as long): a wider rule that computes what the narrow one did. The new hidden units
    get the fresh perception weights, so they are active and learn, and the output layer's new
    rows are its fresh zeros, so they add nothing until training moves them (Net2Net's idea,
    Chen et al. 2016, with zero outgoing weights instead of copies)."""
    if old.shape == new.shape:
        return old
    if old.ndim != new.ndim or any(o > n for o, n in zip(old.shape, new.shape)):
        raise ValueError(f"cannot widen {old.shape} into {new.shape}")
    grown = new.at[tuple(slice(0, o) for o in old.shape)].set(old)
    if old.ndim == 2 and all(o < n for o, n in zip(old.shape, new.shape)):
        # a hidden-to-hidden layer (the doubling rule's residual blocks, weights (in, out)): the
        # new units must not feed the old ones, or the old units compute something else
        grown = grown.at[old.shape[0]:, : old.shape[1]].set(0)
    return grown

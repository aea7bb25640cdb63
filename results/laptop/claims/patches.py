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

import vnca.pool
import vnca.train as train


def saved(run) -> SimpleNamespace | None:
    path = Path(run) / "claims-args.json"
    if Path(run).is_file():
        path = Path(run).parent / "claims-args.json"
    return SimpleNamespace(**json.loads(path.read_text())) if path.exists() else None


def apply(a, steps: int):
    if a.schedule == "cosine":  # what vnca's final_learning_rate and decay_steps now do
        train.config_optimiser = lambda config: train.optimiser(
            config.learning_rate, config.clip_norm, steps, config.learning_rate * a.final_lr)

    if a.pool_fresh != 4:
        def pool_rows(batch_size, pattern=None):  # vnca's pool_pattern "SPPDPPPD" for 1
            i = jnp.arange(batch_size)
            return i % 8 >= a.pool_fresh, i % 4 == 3
        vnca.pool.pool_rows = pool_rows
        vnca.pool.pool_groups = lambda pool_size, batch_size, pattern=None: 1

    if a.pool_kl == "detached":
        import jax
        from vnca.vae import Terms
        paper_pooled_elbo = vnca.pool.pooled_elbo

        def pooled_elbo(model, x, stored_target, stored_state, from_pool, *rest):
            terms, final, target = paper_pooled_elbo(model, x, stored_target, stored_state,
                                                     from_pool, *rest)
            kl = jnp.where(from_pool, jax.lax.stop_gradient(terms.kl), terms.kl)
            return Terms(terms.log_likelihood - kl, terms.log_likelihood, kl), final, target
        vnca.pool.pooled_elbo = pooled_elbo

    if a.warm:
        plain_init = train.init_state

        def init_state(config):
            state = plain_init(config)
            train.init_state = plain_init  # loading builds skeletons with init_state too
            try:
                if Path(a.warm).exists():
                    model = train.load_run(Path(a.warm) / train.CHECKPOINT)[0].model
                else:
                    from vnca import pretrained
                    model = pretrained.load(a.warm)
            finally:
                train.init_state = init_state
            import jax
            leaves = jax.tree.leaves(model)
            if [x.shape for x in leaves] != [x.shape for x in jax.tree.leaves(state.model)]:
                raise ValueError(f"--warm {a.warm}: other shapes than this model's")
            return eqx.tree_at(lambda s: s.model, state,
                               jax.tree.unflatten(jax.tree.structure(state.model), leaves))
        train.init_state = init_state


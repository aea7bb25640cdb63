"""The paper's scale without the hardware: the full-scale steps lower for TPU and GPU on 8 devices and
fit a TPU v3-8's memory; the accelerator code path computes what the CPU path does; --remat."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import perturbed, vnca_command
from vnca.evaluate import image_bounds
from vnca.nca import compiling_for, on_cpu
from vnca.nondoubling import sample_steps
from vnca.recipes import SMOKE_MODELS, train_config
from vnca.step import init_state, train_steps
from vnca.vae import batch_elbo

FULL_SCALE = textwrap.dedent("""
    import time
    import jax
    from vnca.mesh import data_mesh
    from vnca.recipes import train_config
    from vnca.scaling import abstract_state, collectives, hlo_collectives, lowered, memory_gib
    assert jax.device_count() == 8
    mesh = data_mesh()
    for model in ("doubling", "baseline", "nondoubling"):
        config = train_config(model, "full")
        for what in ("train", "evaluate"):
            start = time.perf_counter()
            exported = lowered(config, mesh, ("tpu", "cuda"), what)
            assert exported.platforms == ("tpu", "cuda") and exported.nr_devices == 8
            text = exported.mlir_module()
            # The accelerator path: the NCA steps and the K samples' chunks stay loops.
            assert "stablehlo.while" in text, (model, what)
            # The bound in full float32 on every platform (TPUs default to one bfloat16 pass).
            assert ("precision = [HIGHEST, HIGHEST]" in text) == (what == "evaluate"), (model, what)
            # The training step donates the whole state, as fit does; the bound donates nothing.
            main = next(line for line in text.splitlines() if "func.func public @main" in line)
            state = [x for x in jax.tree.leaves(abstract_state(config, mesh)) if isinstance(x, jax.ShapeDtypeStruct)]
            donated = main.count("jax.buffer_donor = true") + main.count("tf.aliasing_output")
            assert donated == (len(state) if what == "train" else 0), (model, what, donated)
            print(f"{model} {what}: lowered in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        gib = memory_gib(config, mesh)  # the TPU v3-8 split: batch / 8 per core of 16 GiB
        print(f"{model}: {gib:.2f} GiB per device ({time.perf_counter() - start:.1f} s)")
        assert 0.05 < gib < 16, (model, gib)
        # The devices exchange one thing per step: the gradient, averaged once (never inside the NCA's loops),
        # and nothing of the pool (shuffled in groups that each stay on a device).
        found = collectives(config, mesh)
        parameters = sum(x.size for x in jax.tree.leaves(abstract_state(config, mesh).model))
        assert list(found) == [("all-reduce", "once")], (model, found)
        assert 4 * parameters <= found["all-reduce", "once"][1] < 4 * parameters + 1024, (model, found)

    # The reading of collectives from HLO, on a program whose collectives are known: a sum over the
    # devices inside a loop (its operand depends on the trip), and a split array gathered once.
    from jax.sharding import NamedSharding, PartitionSpec
    split, whole = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    def known(x, n):
        total = jax.lax.fori_loop(0, n, lambda i, c: c + jax.numpy.sum(jax.numpy.sin(x * i)), 0.0)
        return total, jax.lax.with_sharding_constraint(x * 2, whole)
    args = (jax.ShapeDtypeStruct((64, 10), "float32", sharding=split), jax.ShapeDtypeStruct((), "int32", sharding=whole))
    text = jax.jit(known, out_shardings=(whole, whole)).lower(*args).compile().as_text()
    assert hlo_collectives(text) == {("all-gather", "once"): (1, 64 * 10 * 4), ("all-reduce", "loop"): (1, 4)}
    print("ok")
""")


def test_full_scale_steps_lower_for_tpu_and_gpu_on_8_devices_fit_a_tpu_v3_8_and_communicate_as_read():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", FULL_SCALE], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr[-3000:]


def test_collectives_are_read_through_calls_and_branches_into_loops():
    from vnca.scaling import hlo_collectives

    text = textwrap.dedent("""\
        %branch (p: f32[4]) -> f32[4] {
          %ar = f32[4]{0} all-reduce(f32[4]{0} %p), to_apply=%add
        }
        %body (c: (s32[], f32[4])) -> (s32[], f32[4]) {
          %k = f32[4]{0} conditional(pred[] %q, f32[4] %x, f32[4] %x), branch_computations={%other, %branch}
        }
        ENTRY %main (x: f32[8,4]) -> f32[32,4] {
          %w = (s32[], f32[4]) while((s32[], f32[4]) %t), condition=%cond, body=%body
          %g = f32[32,4]{1,0} all-gather(f32[8,4]{1,0} %x), dimensions={0}
          %s = (f32[4]{0}, bf16[2]{0}) all-reduce-start(f32[4]{0} %y, bf16[2]{0} %z), to_apply=%add
          %d = f32[4]{0} all-reduce-done(%s)
        }
    """)
    assert hlo_collectives(text) == {("all-gather", "once"): (1, 32 * 4 * 4), ("all-reduce", "loop"): (1, 16),
                                     ("all-reduce", "once"): (1, 16 + 4)}


def test_compiling_for_sets_the_path_and_refuses_unknown_platforms():
    assert on_cpu()  # this machine
    with compiling_for("tpu"):
        assert not on_cpu()
        with compiling_for("cpu"):
            assert on_cpu()
        assert not on_cpu()
    assert on_cpu()
    with pytest.raises(ValueError, match="unknown platform 'tpv'"), compiling_for("tpv"):
        pass


def _loss_and_grads(model, batch, key, steps):
    return eqx.filter_value_and_grad(lambda m: -batch_elbo(m, batch, key, steps=steps).elbo)(model)


@pytest.mark.parametrize("model_name", ["doubling", "nondoubling", "baseline"])
def test_the_accelerator_path_computes_what_the_cpu_path_does(model_name):
    config = train_config(model_name, "smoke", batch_size=4)
    state = init_state(config)
    state = eqx.tree_at(lambda s: s.model, state, perturbed(state.model, seed=9, scale=0.02))
    batch = (jax.random.uniform(jax.random.key(1), (4, 32, 32)) < 0.3).astype(jnp.float32)
    key = jax.random.key(2)
    steps = sample_steps(jax.random.key(3), config.model_config) if model_name == "nondoubling" else None

    def everything(config, state):
        params, rest = eqx.partition(state.model, eqx.is_array)
        program = jax.jit(lambda p: _loss_and_grads(eqx.combine(p, rest), batch, key, steps))
        lowered = program.lower(params).as_text()
        loss, grads = eqx.filter_jit(_loss_and_grads)(state.model, batch, key, steps)
        bounds = image_bounds(state.model, batch, key, samples=6, chunk=3, batch_size=4)
        after, metrics = train_steps(config, state, batch[None])
        return lowered, loss, grads, bounds, after, metrics

    remat = config  # and with remat on, as a reader short of memory runs it
    if model_name != "baseline":
        rule = dataclasses.replace(config.model_config, remat=True)
        remat = dataclasses.replace(config, model_config=rule)
    remat_state = init_state(remat)  # the same parameters: remat changes how, not what
    remat_state = eqx.tree_at(lambda s: s.model, remat_state, perturbed(remat_state.model, seed=9, scale=0.02))
    with compiling_for("tpu"):
        tpu = everything(remat, remat_state)
    cpu = everything(config, state)
    if model_name != "baseline":  # the paths differ: loops (and a cond for a traced T) against none
        # (the random number generator has loops of its own on either path)
        assert tpu[0].count("stablehlo.while") > cpu[0].count("stablehlo.while")
        cases = tpu[0].count("stablehlo.case") - cpu[0].count("stablehlo.case")
        assert (cases > 0) == (model_name == "nondoubling")
        # remat: the recomputed steps are fenced by optimisation barriers
        assert "optimization_barrier" in tpu[0] and "optimization_barrier" not in cpu[0]
    np.testing.assert_allclose(tpu[1], cpu[1], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(tpu[2]), jax.tree.leaves(cpu[2])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(cpu[2])) > 0
    np.testing.assert_allclose(tpu[3], cpu[3], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(eqx.filter(tpu[4], eqx.is_array)),
                    jax.tree.leaves(eqx.filter(cpu[4], eqx.is_array))):
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tpu[5]["loss"], cpu[5]["loss"], rtol=1e-5)


def test_remat_is_a_training_option_that_a_run_may_resume_without(tmp_path, data_dir):
    run = tmp_path / "run"
    common = ["--model", "doubling", "--profile", "smoke", "--out", run, "--batch-size", 4, "--no-progress"]
    done = vnca_command("train", *common, "--steps", 2, "--remat")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["model_config"]["remat"] is True
    resumed = vnca_command("train", *common, "--steps", 4, "--resume")  # remat off now: how, not what
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["model_config"]["remat"] is False
    other = vnca_command("train", *common, "--steps", 6, "--resume", "--update-probability", "0.5")
    assert other.returncode == 2 and "belongs to another run" in other.stderr  # what is computed: refused
    baseline = vnca_command("train", "--model", "baseline", "--profile", "smoke", "--out", tmp_path / "b",
                            "--remat", "--no-progress")
    assert baseline.returncode == 2 and "--remat: the baseline model has no NCA" in baseline.stderr
    assert SMOKE_MODELS["doubling"].remat is False  # the default stays off

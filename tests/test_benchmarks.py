"""benchmarks/: the FLOP count behind every fraction-of-peak figure, and each script's smoke run.

No wall-clock threshold anywhere: speed is what the benchmarks report, not what tests assert.
"""

import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _harness import flops, interleaved, table  # noqa: E402


def test_cost_analysis_counts_a_matmul_as_2_m_n_k_flops():
    # The fraction of peak divides XLA's FLOP count by the 2 n^3 of the peak's matmul: both
    # must count a multiply-add as two FLOPs.
    # flops() reads the lowered program, whose count does not depend on the backend.
    m, k, n = 64, 32, 48
    lowered = jax.jit(jnp.dot).lower(jnp.ones((m, k)), jnp.ones((k, n)))
    assert flops(lowered) == 2 * m * k * n


def test_interleaved_runs_every_case_once_per_round_in_order():
    calls = []
    samples = interleaved(
        {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 3
    )
    assert calls == ["a", "b"] * 3
    assert samples == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_table_is_markdown_with_one_row_per_entry():
    lines = table(["x", "y"], [["a", 0.12345], ["b", 123456.0]]).splitlines()
    assert lines == ["| x | y |", "| --- | --- |", "| a | 0.123 |", "| b | 1.235e+05 |"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "training",
        "trace_layout",
        "exact_score",  # the mixture's closed-form score against jax.grad of log-densities
        "sampling",
        # diffusers' scheduler and blackjax's MALA: runs in the CI step with those extras.
        pytest.param("peers", marks=pytest.mark.diffusers),
        "memory",
        "train_step_parts",
        "convolutions",
        "convolutions --gradient",  # writes convolution_gradients
        "image_demo_training",  # the CPU convolution rule on and off, the demo's training
        "unroll",
        "loop_convolutions",
        "edm_unet_digits",
        # k-diffusion's rows where torch and k-diffusion are installed, scorelab's everywhere.
        "likelihood",
        "image_recipe",
        # a class-conditional U-Net's samples classified by class (train_run + sample_run)
        "classcond_digits",
        "unet_init",  # a U-Net's first build, tensors drawn in few programs or one per shape
        # scorelab's UNet2D against diffusers' UNet2DModel, DDIMPipeline and a torch loop.
        pytest.param("image_sampling", marks=pytest.mark.diffusers),
        pytest.param("image_training", marks=pytest.mark.diffusers),
        pytest.param("unet_parts", marks=pytest.mark.diffusers),
    ],
)
def test_quick_run_writes_its_json(name, tmp_path):
    script, *flags = name.split()
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), *flags, "--quick", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    result = json.loads(out.read_text())
    expected = {"convolutions --gradient": "convolution_gradients"}.get(name, name)
    assert result["benchmark"] == expected and result["quick"] is True
    assert result["machine"]["backend"] == jax.default_backend()
    assert len(result["results"]) > 0


@pytest.mark.parametrize("hand_vjp", [pytest.param(True, marks=pytest.mark.slow), False])
def test_fused_mlp_is_the_mlp_with_the_same_gradient(hand_vjp):
    # training.py's `fused` and `feature-major` ceilings claim to be the same network rewritten:
    # LayerNorm's centring folded into the weights, feature-major, with and without a
    # hand-written backward pass. Check value and gradient against vmap(mlp) with LayerNorm
    # gains and shifts moved off their 1/0 start and an input scale, so that every term of the
    # hand-written VJP is exercised.
    import equinox as eqx
    from _networks import with_moved_norms
    from training import fused_mlp

    from scorelab.models import MLP

    mlp = with_moved_norms(
        MLP(jax.random.key(0), widths=(8, 16, 8), input_scale=3.0), jax.random.key(1)
    )
    x = 4.0 * jax.random.normal(jax.random.key(2), (64, 2))
    params, static = eqx.partition(mlp, eqx.is_inexact_array)

    def loss(net, params):
        return jnp.sum(jnp.sin(net(eqx.combine(params, static), x)))

    reference = jax.value_and_grad(loss, argnums=1)(lambda m, x: jax.vmap(m)(x), params)
    fused = jax.value_and_grad(loss, argnums=1)(
        functools.partial(fused_mlp, hand_vjp=hand_vjp), params
    )
    for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(reference)):
        assert jnp.allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))

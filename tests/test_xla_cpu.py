"""XLA:CPU compile options for convolution programs (``scorelab._xla_cpu``): what they change
in the compiled program, the fallback when a jaxlib lacks them, and that image samples are
the samples XLA's defaults give, up to float32 rounding."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab import _xla_cpu, samplers
from scorelab.diffusers import UNet2D
from scorelab.samplers import _core

_OPTION = "xla_cpu_experimental_ynn_fusion_type"


def _conv_then_dot(x, w, a, b):
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)
    return jax.nn.silu(y).sum(), jnp.tanh(a @ b).sum(1)


def _in_ynnpack(options):
    """The set of ops (``convolution``, ``dot``) that the compiled :func:`_conv_then_dot` runs
    inside YNNPACK fusions."""
    args = (jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 32)), jnp.ones((64, 128)))
    args = (*args, jnp.ones((128, 256)))
    text = jax.jit(_conv_then_dot, compiler_options=options).lower(*args).compile().as_text()
    bodies = dict(re.findall(r"^%([\w.]+) \(.*?\{\n(.*?)^\}", text, re.M | re.S))
    called = re.findall(r"%ynn_fusion[\w.]* = .*?calls=%([\w.]+)", text)
    return {op for op in ("convolution", "dot") for name in called if f" {op}(" in bodies[name]}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's options")
def test_convolutions_leave_ynnpack_and_dots_stay():
    options = _xla_cpu.convolution_options()
    if options is None:  # this jaxlib must then refuse the option: the fallback is justified
        with pytest.raises((RuntimeError, ValueError, TypeError)):
            jax.jit(jnp.negative, compiler_options=_xla_cpu._CONVOLUTION_OPTIONS).lower(0.0)
        return
    # XLA's defaults run both in YNNPACK; the options leave the convolution to XLA.
    assert _in_ynnpack(None) == {"convolution", "dot"}
    assert _in_ynnpack(options) == {"dot"}


def test_an_unknown_option_falls_back_to_xla_defaults(monkeypatch):
    _xla_cpu.convolution_options.cache_clear()
    monkeypatch.setattr(_xla_cpu, "_CONVOLUTION_OPTIONS", {_OPTION: "NOT_A_FUSION_TYPE"})
    try:
        assert _xla_cpu.convolution_options() is None
        # ... and convolution_jit compiles with XLA's defaults, passing jit no options at all.
        assert float(_xla_cpu.convolution_jit(jnp.negative)(jnp.asarray(2.0))) == -2.0
    finally:
        _xla_cpu.convolution_options.cache_clear()


def test_convolution_jit_wraps_the_function():
    def add(x, y):
        return x + y

    jitted = _xla_cpu.convolution_jit(add)
    assert jitted.__wrapped__ is add
    assert float(jitted(jnp.asarray(1.0), 2.0)) == 3.0
    compiled = jitted.lower(jnp.asarray(1.0), 2.0).compile()  # ahead of time, as jit's own
    assert float(compiled(jnp.asarray(4.0), 2.0)) == 6.0


def test_convolution_jit_runs_inside_another_transformation():
    """jax.jit refuses compile options on a jit traced into another program: under a caller's
    jit, grad, scan or checkpoint a convolution_jit function is a plain nested jit, with the
    values and derivatives of its top-level call."""
    cube = _xla_cpu.convolution_jit(lambda x: x**3)
    x = jnp.asarray(2.0)
    assert float(cube(x)) == 8.0
    assert float(jax.jit(cube)(x)) == 8.0
    assert float(jax.jit(lambda: cube(x))()) == 8.0  # no traced argument: still nested
    assert float(jax.grad(cube)(x)) == 12.0  # 3 x^2
    assert float(jax.checkpoint(cube)(x)) == 8.0
    total, _ = jax.lax.scan(lambda c, _: (c + cube(x), None), 0.0, None, length=2)
    assert float(total) == 16.0


def test_image_samplers_run_inside_a_callers_jit_and_grad():
    """Euler on image chains of N(0, s^2 I) is linear, x_out = g x_init with g the product of
    its steps' gains: traced inside a caller's jit it gives the top-level samples, and its
    gradient in the starts' scale is g sum(x_init)."""
    s2, sigmas = 0.25, samplers.default_sigmas(5)
    sampler = samplers.euler(sigmas)
    x_init = 10.0 * jax.random.normal(jax.random.key(1), (3, 1, 4, 4))

    def score(x, sigma):
        return -x / (s2 + sigma**2)

    def total(scale):
        return jnp.sum(samplers.sample(jax.random.key(2), sampler, score, scale * x_init).x)

    grid = np.asarray(sigmas, np.float64)  # ascending; Euler steps from the top to 0
    gain = np.prod(1 + (grid[:-1] - grid[1:]) * grid[1:] / (s2 + grid[1:] ** 2))
    gain *= s2 / (s2 + grid[0] ** 2)  # the last step, from sigma_0 to 0
    np.testing.assert_allclose(jax.jit(total)(1.0), total(1.0), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(total)(1.0), gain * jnp.sum(x_init), rtol=1e-4)


CONFIG = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
}


@pytest.mark.slow  # one image sampler compiled under both option sets
def test_image_samples_equal_xla_defaults_up_to_float32_rounding():
    unet = UNet2D.init(jax.random.key(0), CONFIG)

    def score(x, sigma):  # a convolution network as a VE score: -epsilon / sigma
        return -unet(x[None], 100.0 * sigma)[0] / sigma

    sampler = samplers.ddim(samplers.default_sigmas(8), eta=1.0)
    x_init = 10.0 * jax.random.normal(jax.random.key(1), (4, 1, 8, 8))
    key = jax.random.key(2)
    ours = samplers.sample(key, sampler, score, x_init).x
    defaults = eqx.filter_jit(_core._sample_chains)(
        key, sampler, score, x_init, None, False, None, jnp.asarray(0), sampler.schedule()
    ).x
    # Two float32 programs that sum the same convolutions in different orders: they differ
    # by a few float32 roundings (eps 1.2e-7) of the samples' scale per network evaluation.
    scale = float(jnp.max(jnp.abs(defaults)))
    assert float(jnp.max(jnp.abs(ours - defaults))) <= 1e-5 * scale
    assert np.all(np.isfinite(np.asarray(ours)))

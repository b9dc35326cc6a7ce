"""The public API as a JAX user calls it: under ``jax_enable_x64``, with low-precision and
integer inputs, inside ``jit``, and with options given as any kind of number (pass 27)."""

import re
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab import metrics, noise, samplers
from scorelab.data import validate_data
from scorelab.diffusers import PretrainedError, SchedulerConfig, UNet2D, ddim_grid
from scorelab.likelihood import dequantised_bits_per_dim, log_likelihood
from scorelab.models import ExactScore

_NO_LOG_DENSITY = {"mala"}  # needs a log-density beside the score: below, on its own
_UNET = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (8, 16),
    "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "norm_num_groups": 4,
}


# One of each way it failed in the default suite (a scan's carry, a multistep coefficient
# table, diffrax's buffer, a while_loop); every sampler in the slow step.
_X64_DEFAULT = {"ddim", "unipc", "tsit5", "dpm_adaptive", "predictor_corrector"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name in _X64_DEFAULT else pytest.mark.slow)
        for name in sorted(set(samplers.SAMPLERS) - _NO_LOG_DENSITY)
    ],
)
def test_float32_states_under_x64_sample_in_float32_as_without_it(name, mixture):
    """Under x64 a sampler's grid and coefficients are float64: they promoted float32 states,
    and every sampler but ULA ended in the scan's "carry types differ" (tsit5 in a buffer
    error). The chain now runs in its states' precision and gives float32 mode's samples, to
    the rounding of coefficients computed in float64 and rounded once instead of computed in
    float32 (at most 64 float32 spacings of the states' scale over the 10 steps)."""
    key, score = jax.random.key(0), ExactScore(mixture)
    x_init = samplers.ve_prior(jax.random.key(1), 8, 2, samplers.DEFAULT_SIGMA_MAX)
    expected = samplers.sample(key, samplers.build_sampler(name, samplers.default_sigmas(10)),
                               score, x_init).x  # fmt: skip
    with jax.enable_x64(True):
        sampler = samplers.build_sampler(name, samplers.default_sigmas(10))
        got = samplers.sample(key, sampler, score, x_init).x
    assert got.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(expected)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * np.spacing(np.float32(scale)))


def test_mala_under_x64_keeps_float32_states(mixture):
    """MALA's log-density of a float64 target (under x64) beside float32 states."""
    x_init = mixture.sample(jax.random.key(1), 16)
    with jax.enable_x64(True):
        sampler = samplers.mala(mixture.log_prob, step_size=0.05, n_steps=20)
        out = samplers.sample(jax.random.key(0), sampler, ExactScore(mixture), x_init)
    assert out.x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out.x)))
    assert 0 < float(jnp.mean(out.info.acceptance_rate)) <= 1


def test_log_likelihood_of_float32_points_under_x64_is_float32_modes(mixture):
    """diffrax promoted the state to its float64 times and the trace's linearisation refused
    the float32 probes ("tangent aval float32 for primal aval float64")."""
    points = mixture.sample(jax.random.key(3), 3)
    expected = log_likelihood(jax.random.key(0), ExactScore(mixture), points).log_prob
    with jax.enable_x64(True):
        got = log_likelihood(jax.random.key(0), ExactScore(mixture), points).log_prob
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.slow  # about 21 s of a worker: kept out of the default suite's 15 minutes
def test_unet_under_x64_is_float32_and_callable():
    """Its group norms were float64 under x64 (``jnp.ones`` of JAX's default float) beside
    float32 convolutions: every call failed, and ``state_dict`` raised a 250 000-character
    message."""
    x = jax.random.normal(jax.random.key(2), (2, 1, 8, 8))
    expected = UNet2D.init(jax.random.key(0), _UNET)(x, 10)
    with jax.enable_x64(True):
        network = UNet2D.init(jax.random.key(0), _UNET)
        dtypes = {leaf.dtype for leaf in jax.tree.leaves(eqx.filter(network, eqx.is_array))}
        got = network(x, 10)
        assert {a.dtype for a in network.state_dict().values()} == {np.dtype(np.float32)}
    assert dtypes == {jnp.dtype(jnp.float32)}
    np.testing.assert_array_equal(got, expected)


def test_unet_of_integer_pixels_answers_in_float32():
    """The output took the input's integer dtype: uint8 images gave all-zero predictions."""
    network = UNet2D.init(jax.random.key(0), _UNET)
    pixels = np.arange(64, dtype=np.uint8).reshape(1, 1, 8, 8)
    got = network(pixels, 10)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, network(pixels.astype(np.float32), 10))


@pytest.mark.parametrize(
    "build",
    [
        lambda: samplers.default_sigmas(6),
        lambda: noise.karras_sigmas(6),
        lambda: noise.geometric_sigmas(6, 0.1, 3.0),
        lambda: noise.sigma_grid("karras", 6, 0.1, 10.0),
        lambda: noise.vp_sigmas(6),
    ],
    ids=["default", "karras", "geometric", "sigma_grid", "vp"],
)
def test_a_grid_built_inside_jit_is_the_eager_grid(build):
    """``heun(default_sigmas(n))`` in a jitted function failed on the Python constants: the
    range check compared ``jnp.isfinite`` of them, a tracer there."""
    np.testing.assert_array_equal(jax.jit(build)(), build())


def test_a_traced_grid_end_is_named_with_the_way_out():
    with pytest.raises(TypeError, match=r"^sigma_max: a traced value .* build this outside"):
        jax.jit(lambda top: noise.karras_sigmas(10, sigma_max=top))(3.0)


def test_sampling_a_grid_built_inside_jit(mixture):
    key, score = jax.random.key(0), ExactScore(mixture)
    x_init = samplers.ve_prior(jax.random.key(1), 4, 2, samplers.DEFAULT_SIGMA_MAX)

    def run(x):
        return samplers.sample(key, samplers.heun(samplers.default_sigmas(6)), score, x).x

    np.testing.assert_allclose(jax.jit(run)(x_init), run(x_init), rtol=1e-6)


@pytest.mark.parametrize(
    ("build", "value"),
    [
        (lambda e: samplers.ddim(samplers.default_sigmas(6), eta=e), 0.5),
        (lambda e: samplers.ula(step_size=e), 0.5),
        (samplers.heun, samplers.default_sigmas(6)),
    ],
    ids=["ddim eta", "ula step_size", "heun grid"],
)
def test_a_traced_sampler_option_is_named_with_the_way_out(build, value):
    """A range check of a traced option was a TracerBoolConversionError from deep inside the
    constructor (a traced grid, a TracerArrayConversionError)."""
    with pytest.raises(TypeError, match=r"a traced value .*\(equinox\.filter_jit"):
        jax.jit(build)(value)


def test_a_traced_ddim_eta_of_the_diffusers_wing_is_named_with_the_way_out():
    """Was "eta must be a number >= 0, got JitTracer(...)", a bad value by its words."""
    config = SchedulerConfig()
    with pytest.raises(PretrainedError, match=r"^eta: a traced value"):
        jax.jit(lambda eta: ddim_grid(config, 10, eta))(0.5)


@pytest.mark.parametrize(
    ("name", "option", "values"),
    [
        ("ddim", "eta", [1, 1.0, np.float64(1.0), np.float32(1.0), jnp.float32(1.0)]),
        ("edm", "s_churn", [40, 40.0, np.float64(40.0)]),
        ("ula", "step_size", [1, 1.0, np.float32(1.0)]),
    ],
)
def test_a_float_option_given_as_any_number_is_one_leaf_one_program_one_label(
    name, option, values, mixture
):
    """``eta=1`` was an int32 leaf (a second compilation, and the label ``ddim(eta=1)``), a
    NumPy scalar a strongly typed one (a third)."""
    built = [
        samplers.build_sampler(name, samplers.default_sigmas(6), **{option: v}) for v in values
    ]
    leaves = {(getattr(s, option).dtype, getattr(s, option).weak_type) for s in built}
    assert len(leaves) == 1 and next(iter(leaves))[0] == jnp.float32
    assert len({s.name for s in built}) == 1
    traces = []

    @eqx.filter_jit
    def sample(sampler, x):
        traces.append(sampler.name)  # once per compiled program
        return samplers.sample(jax.random.key(0), sampler, ExactScore(mixture), x).x

    x_init = samplers.ve_prior(jax.random.key(1), 4, 2, samplers.DEFAULT_SIGMA_MAX)
    outputs = [sample(s, x_init) for s in built]
    assert len(traces) == 1
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])


@pytest.mark.parametrize(
    "metric",
    [metrics.sliced_wasserstein, metrics.mmd, metrics.energy_distance],
    ids=["sliced_wasserstein", "mmd", "energy_distance"],
)
def test_a_metric_of_traced_samples_says_it_runs_on_the_host(metric):
    y = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    with pytest.raises(TypeError, match=r"^x: a traced value .* on the host"):
        jax.jit(lambda x: metric(x, y))(y)


def test_bfloat16_is_read_as_float16_is():
    """NumPy files ``bfloat16`` under kind "V": it was refused as "not real numbers" by the
    metrics, the data check and the grids, while float16 was upcast."""
    x = np.random.default_rng(0).normal(size=(64, 2))
    y = np.random.default_rng(1).normal(size=(64, 2))
    for low in (jnp.float16, jnp.bfloat16):
        x_low = jnp.asarray(x, low)
        assert validate_data(x_low).dtype == np.float32
        exact = metrics.energy_distance(np.asarray(x_low, np.float64), y)
        assert metrics.energy_distance(x_low, y) == pytest.approx(exact)
        grid = jnp.asarray([0.5, 1.0, 4.0], low)
        np.testing.assert_array_equal(samplers.ddim(grid).sigmas, [0.5, 1.0, 4.0])


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("ancestral", "s_noise", 1000.0),
        ("edm", "s_noise", 3.0),
        ("predictor_corrector", "snr", 1000.0),
        ("ddim", "final_noise", 1e20),
        ("tsit5", "atol", 1000.0),
        ("dpm_adaptive", "atol", 2.0),
    ],
)
def test_an_option_far_outside_its_usual_range_is_warned_about_by_name(name, option, value):
    """Accepted with exit 0 and nothing said, they sampled noise: ``s_noise = 1000`` gave
    samples of spread 313 against 7.7; ``atol = 1000`` samples 14x too wide (pass 26)."""
    said = re.escape(f"{option}: {value:g} is outside its usual range")
    with pytest.warns(UserWarning, match=f"^{said}"):
        sampler = samplers.build_sampler(name, samplers.default_sigmas(6), **{option: value})
    assert float(getattr(sampler, option)) == pytest.approx(value, rel=1e-7)


def test_options_within_their_usual_range_say_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samplers.build_sampler("edm", samplers.default_sigmas(6), s_noise=1.007, s_churn=40.0)
        samplers.build_sampler("ddim", samplers.default_sigmas(6), final_noise=0.5)
        samplers.build_sampler("tsit5", samplers.default_sigmas(6), atol=0.1)


def test_a_bin_width_wider_than_the_prior_is_refused_naming_it(mixture):
    """``--bin-width 1e20`` failed the solve, and the message told the user to loosen the
    tolerances, which were at their defaults (pass 26)."""
    points = mixture.sample(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"^bin_width: 1e\+20 is wider than sigma_max 80"):
        dequantised_bits_per_dim(jax.random.key(0), ExactScore(mixture), points, bin_width=1e20)

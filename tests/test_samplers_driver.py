"""The driver and the registry: any state shape, no recompilation, MALA's acceptance, options.

Every sampler is a kernel (an Equinox module with ``schedule`` and ``step``) run by one driver
(:func:`scorelab.samplers.sample`); its options are declared once, as fields, and the registry,
``options``, ``label`` and ``build_sampler`` are generated from them.
"""

import dataclasses
import inspect
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab import _validate, samplers
from scorelab.samplers import (
    SAMPLERS,
    budget_levels,
    build_sampler,
    ddim,
    default_sigmas,
    label,
    mala,
    options,
    sample,
)

MEAN = 0.5  # the isotropic Gaussian N(MEAN, I) of the shape test


def _gaussian_score(x, sigma):
    return -(x - MEAN) / (1.0 + sigma**2)


def _gaussian_log_density(x):
    return -0.5 * jnp.sum((x - MEAN) ** 2)


def _build(name, sigmas, **chosen):
    log_density_fn = _gaussian_log_density if SAMPLERS[name].needs_log_density else None
    return build_sampler(name, sigmas, log_density_fn=log_density_fn, **chosen)


_SMALL = {"ula": {"n_steps": 6}, "mala": {"n_steps": 6, "step_size": 0.3}}


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_chain_may_be_an_image(name):
    """A (1, 8, 8) state gives the run of the flattened (64,) vector: same keys, same draws
    (JAX draws a shape's entries in C order), same arithmetic per entry; only the norms of
    Song et al.'s corrector and MALA's sums reduce over all entries, in an order XLA may pick
    per shape, hence a float32 rounding tolerance instead of equality."""
    sampler = _build(name, default_sigmas(6), **_SMALL.get(name, {}))
    x_image = 3.0 * jax.random.normal(jax.random.key(0), (2, 1, 8, 8))
    key = jax.random.key(1)
    image = sample(key, sampler, _gaussian_score, x_image, trajectory=True)
    vector = sample(key, sampler, _gaussian_score, x_image.reshape(2, 64), trajectory=True)
    assert image.x.shape == (2, 1, 8, 8)
    assert image.trajectory.shape[2:] == (1, 8, 8)
    np.testing.assert_allclose(image.x.reshape(2, 64), vector.x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        image.trajectory.reshape(vector.trajectory.shape), vector.trajectory, rtol=1e-5, atol=1e-5
    )
    assert np.any(np.asarray(image.x) != np.asarray(x_image))  # the chains moved


_TRACES = []


def _counting_score(x, sigma):
    _TRACES.append(None)  # a Python side effect: runs when traced, not when executed
    return -(x - MEAN) / (1.0 + sigma**2)


_OTHER = {  # a second value of every float option, same shapes
    "ula": {"step_size": 0.02, "sigma": 0.1},
    "mala": {"step_size": 0.2, "sigma": 0.1},
    "annealed_langevin": {"step_ratio": 1e-4},
    "ddim": {"eta": 0.3, "final_noise": 0.2},
    "predictor_corrector": {"snr": 0.1},
    "edm": {"s_churn": 5.0, "s_tmin": 0.1, "s_tmax": 20.0, "s_noise": 1.0},
    "restart": {"restart_sigma_min": 0.1, "restart_sigma_max": 0.5},
    "tsit5": {"rtol": 1e-2, "atol": 1e-2},
    "dopri5": {"rtol": 1e-2, "atol": 1e-2},
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_new_grid_or_option_value_does_not_recompile(name):
    x_init = jnp.ones((3, 2))
    first = _build(name, default_sigmas(5), **_SMALL.get(name, {}))
    other = {**_SMALL.get(name, {}), **_OTHER.get(name, {})}
    second = _build(name, default_sigmas(5, sigma_max=20.0), **other)
    by_first = sample(jax.random.key(0), first, _counting_score, x_init)
    n_traces = len(_TRACES)
    assert n_traces > 0
    by_second = sample(jax.random.key(0), second, _counting_score, x_init)
    assert len(_TRACES) == n_traces  # nothing was traced again, so nothing recompiled
    assert np.any(by_second.x != by_first.x)  # and the new grid and values were used


def test_mala_mean_acceptance_matches_quadrature():
    r"""On N(0, 1) started at stationarity MALA keeps x ~ N(0, 1) at every step, so each step's
    acceptance probability min(1, ratio(x, y)) with y = (1 - gamma) x + sqrt(2 gamma) z has
    expectation E_{x, z ~ N(0, 1)}[min(1, ratio)], computed here by a 2-D trapezoid rule
    (error ~1e-6). The chains' mean acceptance rates are independent across chains: compared
    within 4 Monte-Carlo standard errors of their mean; ``is_accepted``'s mean estimates the
    same number with more noise."""
    step_size, n_steps, n_chains = 1.2, 50, 4000
    grid = np.linspace(-9.0, 9.0, 1801)
    x, z = np.meshgrid(grid, grid, indexing="ij")
    y = (1 - step_size) * x + np.sqrt(2 * step_size) * z

    def log_q(to, frm):  # log N(to; frm - gamma frm, 2 gamma)
        return -((to - (1 - step_size) * frm) ** 2) / (4 * step_size)

    log_ratio = -0.5 * y**2 + 0.5 * x**2 + log_q(x, y) - log_q(y, x)
    density = np.exp(-0.5 * (x**2 + z**2)) / (2 * np.pi)
    expected = np.trapezoid(np.trapezoid(np.minimum(1.0, np.exp(log_ratio)) * density, grid), grid)

    sampler = mala(lambda v: -0.5 * jnp.sum(v**2), step_size, n_steps)
    x_init = jax.random.normal(jax.random.key(0), (n_chains, 1))
    out = sample(jax.random.key(1), sampler, lambda v, sigma: -v, x_init)
    rates = np.asarray(out.info.acceptance_rate, np.float64)
    assert rates.shape == (n_chains,)
    se = rates.std(ddof=1) / np.sqrt(n_chains)
    assert abs(rates.mean() - expected) < 4 * se, (rates.mean(), expected, se)
    accepted = np.asarray(out.info.is_accepted, np.float64)
    se_accepted = accepted.std(ddof=1) / np.sqrt(n_chains)
    assert abs(accepted.mean() - expected) < 4 * se_accepted
    # Power: the acceptance is far from 1 at this step, so a kernel that always accepted
    # (ULA) or never did would fail by hundreds of standard errors.
    assert 0.2 < expected < 0.9 and (1 - expected) > 100 * se


def test_callback_sees_every_step_of_every_chain():
    calls = []
    sampler = ddim(default_sigmas(7))
    sample(jax.random.key(0), sampler, _gaussian_score, jnp.ones((3, 2)),
           callback=lambda step, x: calls.append(int(step)))  # fmt: skip
    jax.effects_barrier()
    assert sorted(calls) == sorted(list(range(7)) * 3)


def test_noise_of_the_wrong_shape_is_rejected_for_many_chains():
    with pytest.raises(ValueError, match=r"noise must have shape \(3, 7, 2\), got \(3, 6, 2\)"):
        sample(jax.random.key(0), ddim(default_sigmas(7)), _gaussian_score, jnp.ones((3, 2)),
               noise=jnp.ones((3, 6, 2)))  # fmt: skip


# --- one declaration of every option -----------------------------------------------------------


def test_registry_names_are_the_constructors_and_defaults_are_declared_once():
    for name, kind in SAMPLERS.items():
        constructor = getattr(samplers, name)
        assert kind.build is constructor and constructor.__name__ == name
        parameters = inspect.signature(constructor).parameters
        for declared in options(name):
            # The constructor's default is the declared one (it reads it from the field).
            assert parameters[declared.name].default == declared.default, (name, declared)
            assert declared.type in (float, int, str) and declared.help
            if declared.choices is not None:
                assert declared.default in declared.choices
    assert [o.name for o in options("ddim")] == ["eta", "final_noise"]
    assert options("euler") == ()
    assert options("predictor_corrector")[2].choices == samplers.STEP_RULES


def test_labels_and_names_come_from_the_same_declaration():
    sigmas = default_sigmas(5)
    assert label("ddim") == ddim(sigmas).name == "ddim(eta=1.0)"
    assert label("ddim", {"eta": 0.2}) == ddim(sigmas, eta=0.2).name == "ddim(eta=0.2)"
    assert label("ddim", {"final_noise": 0.1}) == "ddim(eta=1.0, final_noise=0.1)"
    assert label("euler") == build_sampler("euler", sigmas).name == "euler"
    assert label("tsit5") == build_sampler("tsit5", sigmas).name == "tsit5(rtol=0.001, atol=0.001)"
    assert label("predictor_corrector", {"step_rule": "snr"}) == (
        "predictor_corrector(n_corrector=1, step_rule=snr)"
    )


def test_budget_levels_come_from_each_samplers_cost():
    assert budget_levels("ddim", 99) == 99
    assert budget_levels("heun", 99) == budget_levels("edm", 99) == 50  # 2N - 1
    assert budget_levels("predictor_corrector", 99, {"n_corrector": 2}) == 33  # N (M + 1)
    assert budget_levels("annealed_langevin", 99) == 19  # 5 steps per level
    assert budget_levels("ula", 99) is None and budget_levels("tsit5", 99) is None
    for name in SAMPLERS:  # the budget buys a grid whose NFE fits it
        levels = budget_levels(name, 60)
        if levels is not None:
            assert 0 < build_sampler(name, default_sigmas(levels)).nfe <= 60


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_sampler("ddim", default_sigmas(5), e=0.0), "'e' is now called 'eta'"),
        (lambda: build_sampler("ddim", default_sigmas(5), eta_0=0.1),
         "'eta_0' is now called 'final_noise'"),
        (lambda: ddim(default_sigmas(5), e=0.0), "'e' is now called 'eta'"),
        (lambda: ddim(default_sigmas(5), eta_0=0.0), "'eta_0' is now called 'final_noise'"),
        (lambda: samplers.ve_ddim_etas(default_sigmas(5), e=0.0), "'e' is now called 'eta'"),
        (lambda: build_sampler("annealed", default_sigmas(5)), "now called 'annealed_langevin'"),
        (lambda: build_sampler("pc", default_sigmas(5)), "now called 'predictor_corrector'"),
        (lambda: options("pc"), "now called 'predictor_corrector'"),
        (lambda: build_sampler("ddim", default_sigmas(5), s_churn=1.0), "unknown option 's_churn'"),
    ],
)  # fmt: skip
def test_former_and_unknown_names_are_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_a_sampler_is_a_frozen_module_of_its_options():
    sampler = ddim(default_sigmas(5), eta=0.5)
    assert isinstance(sampler, eqx.Module) and isinstance(sampler, samplers.AbstractSampler)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.eta = 1.0
    assert sampler.eta.dtype == jnp.float32 and float(sampler.eta) == 0.5


# --- float64 end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_computes_in_float64_under_x64(name):
    """No schedule hard-codes float32: under x64 every per-step input, state and record is
    float64."""
    with jax.enable_x64(True):
        sigmas = np.geomspace(0.02, 80.0, 5)  # float64
        sampler = _build(name, sigmas, **_SMALL.get(name, {}))
        floats = [
            a for a in jax.tree.leaves(sampler.schedule()) if jnp.issubdtype(a.dtype, jnp.floating)
        ]
        assert all(a.dtype == jnp.float64 for a in floats), [a.dtype for a in floats]
        out = sample(jax.random.key(0), sampler, _gaussian_score, jnp.ones((2, 3), jnp.float64),
                     trajectory=True)  # fmt: skip
        assert out.x.dtype == out.trajectory.dtype == jnp.float64


def test_ddim_eta0_is_the_euler_step_in_float64():
    """Docstring claim (Karras et al. 2022, Sec. 4), in float64: DDIM with eta = 0 equals Euler
    on the probability-flow ODE in sigma up to float64 rounding (states of size ~50: ulp 7e-15)."""
    with jax.enable_x64(True):
        sigmas = np.geomspace(0.02, 80.0, 30)
        x_T = jnp.array([[40.0, -25.0], [-3.0, 60.0]])
        by_ddim = sample(jax.random.key(0), ddim(sigmas, eta=0.0), _gaussian_score, x_T, True)
        by_euler = sample(jax.random.key(0), samplers.euler(sigmas), _gaussian_score, x_T, True)
        assert by_ddim.trajectory.dtype == jnp.float64
        np.testing.assert_allclose(by_ddim.trajectory, by_euler.trajectory, rtol=0, atol=1e-12)


# --- what the driver refuses, and the legacy keys it takes ---------------------------------------


@pytest.mark.parametrize("name", ["ddim", "ancestral", "predictor_corrector", "ula"])
def test_a_legacy_uint32_key_draws_what_its_typed_key_draws(name):
    """``jax.random.PRNGKey(0)`` failed in every stochastic sampler ("cannot reshape array of
    shape (6, 2) into shape (6, 1)") while training and the losses took it."""
    grid = default_sigmas(6) if SAMPLERS[name].uses_grid else None
    sampler = build_sampler(name, grid, **({"n_steps": 5} if name == "ula" else {}))
    x0 = jax.random.normal(jax.random.key(1), (3, 2))
    typed = sample(jax.random.key(0), sampler, _gaussian_score, x0).x
    legacy = sample(jax.random.PRNGKey(0), sampler, _gaussian_score, x0).x
    np.testing.assert_array_equal(legacy, typed)


@pytest.mark.parametrize(
    "change, error, message",
    [
        # a scalar score broadcast over the state and ran to samples near -4e9
        (dict(score_fn=lambda x, s: jnp.sum(x)), ValueError, r"score_fn: returned shape \(\)"),
        (dict(score_fn=lambda x, s: -x[:1]), ValueError, r"score_fn: returned shape \(1,\)"),
        # one chain: an IndexError inside the driver
        (dict(x_init=jnp.zeros(2)), ValueError, r"x_init: expected chains \(n, \*S\)"),
        # a scan's "carry types differ"; complex states returned complex samples
        (dict(x_init=jnp.zeros((3, 2), jnp.float16)), TypeError, "x_init: expected float32"),
        (dict(x_init=jnp.zeros((3, 2), jnp.int32)), TypeError, "x_init: expected float32"),
        (dict(x_init=jnp.zeros((3, 2), jnp.complex64)), TypeError, "x_init: expected float32"),
        # 1.5 ran as chain 1; -1 wrapped to chain 2**32 - 1
        (dict(first_chain=1.5), TypeError, "first_chain: expected an integer"),
        (dict(first_chain=-1), ValueError, r"first_chain: expected an integer in \[0, 2\*\*32\)"),
        (dict(key=3), TypeError, r"key: expected a PRNG key \(jax.random.key\(seed\)\)"),
    ],
)
def test_sample_refuses_what_would_run_to_meaningless_samples(change, error, message):
    call = dict(
        key=jax.random.key(0), score_fn=_gaussian_score, x_init=jnp.zeros((3, 2)), first_chain=0
    )
    call.update(change)
    with pytest.raises(error, match=message):
        sample(call["key"], ddim(default_sigmas(5)), call["score_fn"], call["x_init"],
               first_chain=call["first_chain"])  # fmt: skip


def test_a_traced_first_chain_is_taken_under_jit():
    x0, sampler = jnp.zeros((2, 2)), ddim(default_sigmas(5), eta=1.0)

    def chunk(first):
        return sample(jax.random.key(0), sampler, _gaussian_score, x0, first_chain=first).x

    np.testing.assert_array_equal(jax.jit(chunk)(2), chunk(2))


@pytest.mark.parametrize(
    "grid, message",
    [
        # each passed a float64 check and sampled to NaN in float32
        ([1.0, 1.0000000001], "strictly ascending in float32"),
        ([1.0, 2.0, 1e39], "strictly ascending in float32"),
        ([1e-45, 1.0, 2.0], "the smallest level: .* is below 1.1e-19"),
        ([1 + 1j, 2.0], "sigmas: expected real numbers"),
    ],
)
def test_a_grid_is_checked_in_the_precision_it_is_sampled_in(grid, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build_sampler("ddim", np.array(grid))


@pytest.mark.parametrize(
    "name, option, value, error, message",
    [
        # inf passed "step_size > 0" and friends, and the samples came out NaN
        ("ula", "step_size", float("inf"), ValueError, "step_size: expected a finite number, got"),
        ("ddim", "final_noise", float("inf"), ValueError, "final_noise: expected a finite"),
        ("edm", "s_noise", 1e39, ValueError, "s_noise: 1e\\+39 is beyond float32's range"),
        ("predictor_corrector", "snr", float("nan"), ValueError, "snr: expected a finite"),
        # an array, a string, None: "truth value ... ambiguous" or "'>=' not supported"
        ("ddim", "eta", jnp.array([0.5, 0.5]), TypeError, "eta: expected a number"),
        ("edm", "s_churn", "1", TypeError, "s_churn: expected a number"),
        ("edm", "s_churn", None, TypeError, "s_churn: expected a number"),
        ("ddim", "eta", True, TypeError, "eta: expected a number"),
        # an OverflowError from the compiled call
        ("predictor_corrector", "n_corrector", 10**12, ValueError, "below 2\\*\\*31"),
        ("ula", "n_steps", 2.0, TypeError, "n_steps: expected an integer"),
    ],
)
def test_an_option_of_the_wrong_type_or_not_finite_is_refused_naming_it(
    name, option, value, error, message
):
    grid = default_sigmas(5) if SAMPLERS[name].uses_grid else None
    with pytest.raises(error, match=message):
        build_sampler(name, grid, **{option: value})
    constructor = getattr(samplers, name)
    with pytest.raises(error, match=message):  # the constructor itself, not only the registry
        constructor(**{option: value}) if grid is None else constructor(grid, **{option: value})


def test_an_infinite_option_is_taken_only_where_it_is_declared_unbounded():
    # s_tmax = inf (churn on every level) is k-diffusion's default for sample_heun, which edm
    # mirrors: edm refused it though its own default is 50 (pass 12, #1); euler_churn and
    # dpm_2 default to it.
    unbounded = {(name, o.name) for name in SAMPLERS for o in options(name) if o.unbounded}
    assert unbounded == {("edm", "s_tmax"), ("euler_churn", "s_tmax"), ("dpm_2", "s_tmax")}
    for name in ("edm", "euler_churn", "dpm_2"):
        sampler = build_sampler(name, default_sigmas(5), s_churn=10.0, s_tmax=float("inf"))
        assert float(sampler.s_tmax) == float("inf")
    # and churn on every level equals a bound above the whole grid
    grid = default_sigmas(6)
    x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)
    score = lambda y, sigma: -y / (1.0 + sigma**2)  # noqa: E731
    key = jax.random.key(3)
    every = samplers.sample(key, samplers.edm(grid, 10.0, 0.0, float("inf")), score, x)
    above = samplers.sample(key, samplers.edm(grid, 10.0, 0.0, 1e30), score, x)
    np.testing.assert_array_equal(np.asarray(every.x), np.asarray(above.x))
    with pytest.raises(ValueError, match="s_tmin: expected a finite number"):
        build_sampler("edm", default_sigmas(5), s_tmin=float("inf"))


def test_budget_levels_refuses_a_budget_that_is_not_a_positive_integer():
    for nfe in (-5, 0, 2.5):  # -5 levels, 2.5 levels
        with pytest.raises(ValueError, match="nfe: expected an integer >= 1"):
            budget_levels("ddim", nfe)


# --- hostile inputs: the driver and the registry name the argument --------------------------------

_X0 = jnp.zeros((4, 2))


def test_a_sampler_with_options_samples_inside_a_callers_jit():
    """Its options are traced there: the size check's label read them with NumPy (a
    TracerArrayConversionError in every k-diffusion parity case with an eta)."""
    sigmas = samplers.default_sigmas(6)
    sampler = samplers.build_sampler("ddim", sigmas, eta=0.5)
    x = jnp.ones((3, 2))
    score = lambda y, sigma: -y / (1 + sigma**2)  # noqa: E731
    out = eqx.filter_jit(samplers.sample)(jax.random.key(0), sampler, score, x)
    np.testing.assert_array_equal(out.x, samplers.sample(jax.random.key(0), sampler, score, x).x)


@pytest.mark.parametrize(
    "change, error, message",
    [
        # an AttributeError: 'str' object has no attribute 'noise_shape'
        (dict(sampler="ddim"), TypeError, "sampler: expected an AbstractSampler"),
        (dict(score_fn=3), TypeError, "score_fn: expected a callable"),
        # "'NoneType' object is not callable" inside the trace
        (dict(score_fn=None), TypeError, "score_fn: None, but this sampler evaluates the score"),
        # a scan's "carry input and carry output must have equal types"
        (dict(score_fn=lambda x, s: x.astype(jnp.complex64)), TypeError,
         "score_fn: returned complex64; it must return a real array"),
        # a TracerArrayConversionError
        (dict(score_fn=lambda x, s: (x, x)), TypeError, "score_fn: returned tuple"),
        # a TypeError from jax.debug.callback, inside the trace
        (dict(callback=3), TypeError, "callback: expected a callable"),
        # a ComplexWarning, then the real part
        (dict(noise=jnp.zeros((4, 5, 2), jnp.complex64)), TypeError,
         "noise: expected real standard normal draws, got complex64"),
        (dict(noise=jnp.zeros((4, 5, 2), bool)), TypeError, "noise: expected real"),
        # NaN samples without a word
        (dict(noise=jnp.full((4, 5, 2), jnp.nan)), ValueError, "noise: expected finite"),
        (dict(x_init=_X0.at[2, 1].set(jnp.nan)), ValueError,
         re.escape("x_init: expected finite starting states, got NaN or inf entries (chain 2)")),
        (dict(x_init=_X0.at[0, 0].set(jnp.inf)), ValueError, "x_init: expected finite"),
        # an OverflowError converting to int32; its check said [0, 2**32)
        (dict(first_chain=2**32 - 2), ValueError,
         re.escape("first_chain: expected an integer in [0, 2**32) with first_chain + n <= 2**32 "
                   "(n = 4 chains)")),
        (dict(first_chain=2**70), ValueError, "first_chain: expected an integer in"),
        (dict(first_chain="1"), TypeError, "first_chain: expected an integer"),
        (dict(first_chain=jnp.array([1, 2])), TypeError, "first_chain: expected an integer"),
        (dict(key=jax.random.split(jax.random.key(0), 3)), TypeError, "key: expected one PRNG key"),
        (dict(key=jnp.zeros(2)), TypeError, r"key: expected a PRNG key \(jax.random.key"),
    ],
)  # fmt: skip
def test_sample_names_each_bad_argument_in_one_line(change, error, message):
    call = dict(key=jax.random.key(0), sampler=ddim(default_sigmas(5)), score_fn=_gaussian_score,
                x_init=_X0, noise=None, callback=None, first_chain=0)  # fmt: skip
    call.update(change)
    with pytest.raises(error, match=message) as raised:
        sample(call.pop("key"), call.pop("sampler"), call.pop("score_fn"), call.pop("x_init"),
               **call)  # fmt: skip
    assert "\n" not in str(raised.value)


def test_sample_takes_a_list_of_noise_and_every_first_chain_below_2_32():
    """A list ``noise`` was mapped over as a pytree ("vmap ... rank 0"), as a list ``x_init``
    is not; ``first_chain = 2**32 - 2`` was an ``OverflowError`` converting to int32."""
    key, sampler = jax.random.key(3), ddim(default_sigmas(5))
    x0 = jax.random.normal(jax.random.key(1), (4, 2))
    noise = np.asarray(jax.random.normal(jax.random.key(2), (4, 5, 2)))
    np.testing.assert_array_equal(
        sample(key, sampler, _gaussian_score, x0, noise=noise.tolist()).x,
        sample(key, sampler, _gaussian_score, x0, noise=noise).x,
    )
    last = sample(key, sampler, _gaussian_score, x0, first_chain=2**32 - 4).x
    # chain i draws from fold_in(key, first_chain + i): the chunk of the last three chains
    chunk = sample(key, sampler, _gaussian_score, x0[1:], first_chain=2**32 - 3).x
    np.testing.assert_array_equal(last[1:], chunk)
    assert not np.array_equal(last[0], last[1])


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(x_init=jnp.array([jnp.nan, 0.0])), ValueError, "x_init: expected finite"),
        (dict(noise=[[0.0, 0.0]] * 4 + [[jnp.nan, 0.0]]), ValueError, "noise: expected finite"),
        (dict(noise=jnp.zeros((5, 2), jnp.complex64)), TypeError, "noise: expected real"),
        (dict(score_fn="score"), TypeError, "score_fn: expected a callable"),
        (dict(key=0), TypeError, "key: expected a PRNG key"),
    ],
)
def test_one_chain_run_names_each_bad_argument(change, error, message):
    call = dict(key=jax.random.key(0), score_fn=_gaussian_score, x_init=jnp.zeros(2), noise=None)
    call.update(change)
    with pytest.raises(error, match=message):
        ddim(default_sigmas(5)).run(call["key"], call["score_fn"], call["x_init"],
                                    noise=call["noise"])  # fmt: skip


def test_brownian_increment_names_a_seed_given_for_its_key():
    with pytest.raises(TypeError, match="key: expected a PRNG key"):
        samplers.brownian_increment(0, 0.1, 1.0, 0.2, 0.3, (2,), jnp.float32)


@pytest.mark.parametrize(
    "call, error, message",
    [
        # a ZeroDivisionError
        (lambda: budget_levels("annealed_langevin", 10, {"n_steps_per_level": 0}), ValueError,
         "n_steps_per_level must be a positive integer"),
        (lambda: budget_levels("dpm_solver", 10, {"order": 0}), ValueError,
         "order must be 1, 2 or 3"),
        # "can only concatenate str (not "int") to str"
        (lambda: budget_levels("predictor_corrector", 10, {"n_corrector": "2"}), TypeError,
         "n_corrector: expected an integer"),
        # 20 levels for an option build_sampler refuses
        (lambda: budget_levels("restart", 10, {"n_restarts": -5}), ValueError,
         "n_restarts must be an integer >= 0"),
        (lambda: budget_levels("ula", 10, {"n_steps": 0}), ValueError,
         "n_steps must be a positive integer"),
        (lambda: budget_levels("edm", 10, {"s_churn": float("inf")}), ValueError,
         "s_churn: expected a finite number"),
        # labelled 'ddim(eta=x)' and 'ddim(eta=nan)'
        (lambda: label("ddim", {"eta": "x"}), TypeError, "eta: expected a number"),
        (lambda: label("ddim", {"eta": float("nan")}), ValueError, "eta: expected a finite"),
        (lambda: label("mala", {"n_steps": 0}), ValueError, "n_steps must be a positive integer"),
        # "dictionary update sequence element #0 has length 3; 2 is required"
        (lambda: samplers.sampler_options("ddim", ["eta"]), TypeError,
         "options: expected a dict of option name -> value, got list"),
        (lambda: label("ddim", ["eta"]), TypeError, "options: expected a dict"),
        (lambda: budget_levels("ddim", 10, "eta"), TypeError, "options: expected a dict"),
        # "unhashable type: 'list'"
        (lambda: build_sampler(["ddim"], default_sigmas(5)), ValueError,
         re.escape("unknown sampler ['ddim']: expected a sampler's name (a string)")),
        (lambda: options(None), ValueError, "unknown sampler None"),
        (lambda: samplers.sampler_options("ddim", {1: 0.5}), ValueError, "unknown option 1"),
        # silently dropped, where returns_score=True was refused
        (lambda: build_sampler("ddim", default_sigmas(5), log_density_fn=_gaussian_log_density),
         ValueError, re.escape("sampler 'ddim' takes no log-density (log_density_fn)")),
        (lambda: build_sampler("ula", log_density_fn=_gaussian_log_density), ValueError,
         re.escape("sampler 'ula' takes no log-density (log_density_fn)")),
    ],
)  # fmt: skip
def test_the_registry_checks_option_values_as_build_sampler_does(call, error, message):
    with pytest.raises(error, match=message) as raised:
        call()
    assert "\n" not in str(raised.value)


def test_a_budget_too_small_for_any_grid_buys_no_levels_and_labels_do_not_warn():
    """``budget_levels("restart", 1)`` was -5 levels; the registry's check of the options on a
    grid of its own does not warn about that grid (annealed Langevin's step against its
    ``sigma_min``); pytest turns warnings into errors."""
    assert budget_levels("restart", 1) == 0 and budget_levels("restart", 20) == 4
    assert label("annealed_langevin", {"step_ratio": 1.0}) == (
        "annealed_langevin(n_steps_per_level=5, step_ratio=1.0)"
    )
    assert budget_levels("annealed_langevin", 50, {"step_ratio": 1.0}) == 10
    assert budget_levels("ddim", 7, {"eta": jnp.asarray(0.5)}) == 7  # an array value


def test_sample_refuses_a_run_beyond_memory_before_tracing(monkeypatch):
    """``ula(n_steps=2**31 - 1)`` was an out-of-memory error from XLA after compiling."""
    x0 = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="sampler: 2147483647 steps of ula.*: needs"):
        sample(jax.random.key(0), samplers.ula(n_steps=2**31 - 1), _gaussian_score, x0)
    monkeypatch.setattr(_validate, "available_memory", lambda: 10_000)
    sampler = ddim(default_sigmas(5))
    sample(jax.random.key(0), sampler, _gaussian_score, x0)  # 640 bytes of draws
    with pytest.raises(ValueError, match=re.escape("x_init: 1000 chains of 5 steps of ddim")):
        sample(jax.random.key(0), sampler, _gaussian_score, jnp.zeros((1000, 2)))
    with pytest.raises(ValueError, match=re.escape("trajectory: 100 chains of 5 steps of euler")):
        sample(jax.random.key(0), samplers.euler(default_sigmas(5)), _gaussian_score,
               jnp.zeros((100, 10)), trajectory=True)  # fmt: skip


@pytest.mark.parametrize(
    "sigmas",
    [[0.1, 0.1, 1.0], [0.0, 1.0], [1.0, 1.0000000001, 2.0], [-0.1, 1.0]],
    ids=["repeated", "zero_first", "merge_in_float32", "negative"],
)
def test_a_grid_that_is_not_positive_and_strictly_ascending_in_float32_is_refused(sigmas):
    """A repeated level is a step of length 0, a level 0 divides by zero in the score, and
    levels float32 cannot tell apart merge into one (mutation pass 33: each was let through
    by a mutant that no test noticed)."""
    with pytest.raises(ValueError, match="sigmas must be finite, positive and strictly ascending"):
        samplers.euler(sigmas)
    samplers.euler([1e-3, 0.5, 1.0])  # the same checks pass a grid that is

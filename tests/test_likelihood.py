"""Likelihood by the probability-flow ODE against the exact oracle, Hutchinson's estimator
against its closed-form mean and variance, and bits per dimension by hand.

ODE tolerances: the step-size controller keeps each step's local error below ``rtol`` times
the state, and the log-density integral ``ℓ`` grows to at most ``d log(sigma_max / sigma_min)``
(its integrand ``σ² tr((C + σ² I)^{-1})`` is at most ``d`` for a Gaussian component), so the
global error allowed is ``ODE_SLACK * rtol * d * log(sigma_max / sigma_min)``, and a
convergence check shows the error is the solver's (it shrinks with ``rtol``). The prior
mismatch ``log N(y_T; 0, σ_max² I) - log q_{σ_max}(y_T)`` is removed exactly from the ODE's
end point ``latent``, so the comparison isolates the solve.

Statistical checks: ``K_SE = 4`` standard errors from fixed-seed repeats.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.likelihood import (
    EIGHT_BIT_BIN_WIDTH,
    bits_per_dim,
    dequantise,
    dequantised_bits_per_dim,
    log_likelihood,
    ode_log_likelihood,
)
from scorelab.models import ExactScore, NoiseConditionalMLP
from scorelab.samplers import ve_score_from_vp, vp_alpha_sigma_from_ve
from scorelab.targets import DIGITS_BIN_WIDTH, digits_mixture, gaussian

SIGMA_MIN, SIGMA_MAX = 0.02, 80.0
ODE_SLACK = 5.0
K_SE = 4.0
N_REPEATS = 400

# A correlated Gaussian in 4-D: Rademacher probes have variance 2 sum_{i != j} M_ij^2 > 0.
_A = np.array(
    [[1.0, 0.6, 0.0, 0.2], [0.0, 0.8, -0.5, 0.0], [0.3, 0.0, 1.2, 0.4], [0.0, 0.1, 0.0, 0.5]]
)
COVARIANCE = _A @ _A.T + 0.05 * np.eye(4)


def _ode_tolerance(rtol, dim):
    return ODE_SLACK * rtol * dim * math.log(SIGMA_MAX / SIGMA_MIN)


def _gaussian_log_prob(y, variance):
    """log N(y; 0, variance I) over the last axis."""
    dim = y.shape[-1]
    return -0.5 * (jnp.sum(y**2, axis=-1) / variance + dim * jnp.log(2 * jnp.pi * variance))


def _with_exact_prior(out, target, prior_variance=SIGMA_MAX**2):
    """The ODE's log-density with the prior N(0, prior_variance I) replaced by q_{σ_max}."""
    return (
        out.log_prob
        - _gaussian_log_prob(out.latent, prior_variance)
        + target.ve_marginal(SIGMA_MAX).log_prob(out.latent)
    )


def _integrated_trace_matrix(covariance):
    r"""M = ∫ σ² (C + σ² I)^{-1} d log σ = ½ U diag(log((λ + σ_max²)/(λ + σ_min²))) U^T.

    For a Gaussian target the divergence integrand is -σ² tr J with J = -(C + σ² I)^{-1},
    independent of x, so a fixed probe v contributes exactly v^T M v.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    log_ratio = np.log((eigenvalues + SIGMA_MAX**2) / (eigenvalues + SIGMA_MIN**2))
    return 0.5 * (eigenvectors * log_ratio) @ eigenvectors.T


@pytest.mark.slow  # ODE solves at tight tolerances
def test_exact_score_gives_the_noised_log_density_of_the_seed_mixture(mixture):
    """With the exact score the ODE returns log q_{σ_min}(x), to a tolerance that shrinks with
    rtol; without the correction the prior mismatch of N(0, 80² I) shows (about 0.03 nats)."""
    x = mixture.sample(jax.random.key(1), 8)
    exact = mixture.ve_marginal(SIGMA_MIN).log_prob(x)
    errors = {}
    for rtol in (1e-4, 1e-6):
        out = log_likelihood(
            jax.random.key(0), ExactScore(mixture), x, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
            rtol=rtol, atol=rtol,
        )  # fmt: skip
        errors[rtol] = np.max(np.abs(_with_exact_prior(out, mixture) - exact))
        assert errors[rtol] < _ode_tolerance(rtol, 2)
    assert errors[1e-6] < errors[1e-4] / 10
    assert np.max(np.abs(out.log_prob - exact)) > 100 * errors[1e-6]  # the mismatch is real


@pytest.mark.slow  # ODE solves at tight tolerances
def test_exact_score_gives_the_noised_log_density_of_a_correlated_gaussian():
    target = gaussian(jnp.array([1.0, -2.0, 0.5, 0.0]), COVARIANCE)
    x = target.sample(jax.random.key(2), 6)
    rtol = 1e-6
    out = log_likelihood(
        jax.random.key(0), ExactScore(target), x, n_probes="exact", rtol=rtol, atol=rtol
    )
    exact = target.ve_marginal(SIGMA_MIN).log_prob(x)
    assert np.max(np.abs(_with_exact_prior(out, target) - exact)) < _ode_tolerance(rtol, 4)


def test_vp_likelihood_is_the_vp_marginal_log_density(mixture):
    """process="vp": the VE score of the VP oracle, the N(0, I) prior and x_t = α_t y give the
    log-density of the VP marginal N(α_t μ_k, α_t² C_k + σ_t² I) at the lowest level."""
    alpha_t, sigma_t = vp_alpha_sigma_from_ve(SIGMA_MIN)
    x_t = mixture.marginal(alpha_t, sigma_t).sample(jax.random.key(3), 6)

    def vp_score(x, alpha, sigma):
        return mixture.marginal(alpha, sigma).score(x)

    rtol = 1e-6
    out = log_likelihood(
        jax.random.key(0), ve_score_from_vp(vp_score), x_t, process="vp", rtol=rtol, atol=rtol
    )
    exact = mixture.marginal(alpha_t, sigma_t).log_prob(x_t)
    corrected = _with_exact_prior(out, mixture, prior_variance=1.0 + SIGMA_MAX**2)
    assert np.max(np.abs(corrected - exact)) < _ode_tolerance(rtol, 2)


@pytest.mark.parametrize(
    "probe, n_probes", [pytest.param("rademacher", 1, marks=pytest.mark.slow), ("gaussian", 3)]
)
def test_hutchinson_is_unbiased_with_the_fixed_probe_variance(probe, n_probes):
    """Probes held fixed along the solve: each estimate is the exact result plus
    (1/K) sum_k v_k^T M v_k - tr M, so the mean over repeats is the exact-trace result and the
    variance is (2/K) sum_{i != j} M_ij^2 (Rademacher) or (2/K) tr M^2 (Gaussian); probes
    redrawn at every step would average the noise away and fail the variance check."""
    target = gaussian(jnp.zeros(4), COVARIANCE)
    x = target.sample(jax.random.key(4), 1)
    options = dict(rtol=1e-6, atol=1e-6)
    exact = log_likelihood(jax.random.key(0), ExactScore(target), x, n_probes="exact", **options)
    repeats = jnp.repeat(x, N_REPEATS, axis=0)  # point i draws its probes from fold_in(key, i)
    estimates = log_likelihood(
        jax.random.key(5), ExactScore(target), repeats, n_probes=n_probes, probe=probe, **options
    )
    values = np.asarray(estimates.log_prob, np.float64)
    mean, se = values.mean(), values.std(ddof=1) / math.sqrt(values.size)
    assert abs(mean - float(exact.log_prob[0])) < K_SE * se

    m = _integrated_trace_matrix(COVARIANCE)
    off_diagonal = np.sum(m**2) - np.sum(np.diag(m) ** 2)
    expected_variance = 2.0 * (off_diagonal if probe == "rademacher" else np.sum(m**2)) / n_probes
    squared_deviations = (values - mean) ** 2
    variance_se = squared_deviations.std(ddof=1) / math.sqrt(values.size)
    assert abs(squared_deviations.mean() - expected_variance) < K_SE * variance_se
    # Not vacuous: the variance is resolved, so zero (probes redrawn per step) would fail.
    assert expected_variance > 2 * K_SE * variance_se


def test_nfe_counts_every_field_evaluation(mixture):
    calls = []

    def counting_score(x, sigma):
        jax.debug.callback(lambda: calls.append(None))
        return ExactScore(mixture)(x, sigma)

    x = mixture.sample(jax.random.key(6), 1)[0]
    out = ode_log_likelihood(jax.random.key(0), counting_score, x, rtol=1e-4, atol=1e-4)
    jax.effects_barrier()
    assert int(out.nfe) == len(calls) > 7


@pytest.mark.slow  # about 11 s of a worker: kept out of the default suite's 15 minutes
def test_a_point_does_not_depend_on_its_batch(mixture):
    """fold_in(key, i): the first points of a batch are the points of a smaller batch."""
    x = mixture.sample(jax.random.key(7), 5)
    options = dict(n_probes=2, rtol=1e-4, atol=1e-4)
    full = log_likelihood(jax.random.key(8), ExactScore(mixture), x, **options)
    part = log_likelihood(jax.random.key(8), ExactScore(mixture), x[:2], **options)
    np.testing.assert_allclose(full.log_prob[:2], part.log_prob, rtol=1e-6)
    np.testing.assert_array_equal(full.nfe[:2], part.nfe)


@pytest.mark.slow  # about 12 s of a worker: kept out of the default suite's 15 minutes
def test_digits_likelihood_in_64_dimensions_matches_the_mixture():
    """The 64-D oracle: exact trace (64 JVPs per evaluation) on image-shaped points
    (1, 8, 8), against the exact log-density of the noised mixture."""
    target = digits_mixture()
    x = target.sample(jax.random.key(9), 3)
    rtol = 1e-6
    out = log_likelihood(
        jax.random.key(0),
        lambda image, sigma: ExactScore(target)(image.reshape(-1), sigma).reshape(image.shape),
        x.reshape(-1, 1, 8, 8),
        rtol=rtol,
        atol=rtol,
    )
    assert out.latent.shape == (3, 1, 8, 8)
    exact = target.ve_marginal(SIGMA_MIN).log_prob(x)
    corrected = _with_exact_prior(out._replace(latent=out.latent.reshape(3, 64)), target)
    assert np.max(np.abs(corrected - exact)) < _ode_tolerance(rtol, 64)


def test_dequantise_adds_one_uniform_draw_of_a_whole_bin():
    """z = x + bin_width u, u ~ U[0, 1)^d: the documented formula, draw for draw (a half-bin
    jitter stayed inside [x, x + bin_width) and passed the range test)."""
    key, x = jax.random.key(5), jnp.full((4096,), 0.25)
    z = dequantise(key, x, 0.5)
    np.testing.assert_array_equal(z, x + 0.5 * jax.random.uniform(key, x.shape, x.dtype))


def test_dequantised_bits_per_dim_counts_every_axis_of_an_image():
    """D is the number of values of a point, C * H * W for images (the documented use), not
    its last axis."""
    bpd, out = dequantised_bits_per_dim(
        jax.random.key(0), lambda x, s: -x / (1 + s**2), jnp.zeros((2, 2, 3)), bin_width=0.25
    )
    np.testing.assert_allclose(bpd, bits_per_dim(out.log_prob, 6, 0.25), rtol=1e-6)


def test_bits_per_dim_by_hand():
    # A model uniform on [-1, 1 + Δ)^D gives each of the 256 levels mass 1/256: 8 bits.
    dim = 3
    uniform_log_prob = -dim * math.log(256 * EIGHT_BIT_BIN_WIDTH)
    np.testing.assert_allclose(bits_per_dim(uniform_log_prob, dim), 8.0, rtol=1e-6)
    # The stated formula with 127.5: (-log p + D log 127.5) / (D log 2).
    np.testing.assert_allclose(
        bits_per_dim(-100.0, 64), (100.0 + 64 * math.log(127.5)) / (64 * math.log(2)), rtol=1e-6
    )
    # The digits' 17 levels spaced 1/8: a uniform model gives log2(17).
    np.testing.assert_allclose(
        bits_per_dim(-64 * math.log(17 / 8), 64, DIGITS_BIN_WIDTH), math.log2(17), rtol=1e-6
    )


@pytest.mark.slow  # ODE solves of 64-dimensional images
def test_dequantised_bits_per_dim_of_digits_under_the_oracle():
    """Point i: fold_in(key, i) split into (dequantisation, probes); z_i = x_i + Δ u_i lies
    in its bin, and bpd is bits_per_dim of the exact noised log-density at z_i."""
    target = digits_mixture()
    key = jax.random.key(10)
    levels = jnp.round((target.sample(jax.random.key(11), 3) + 1.0) * 8.0)
    x = jnp.clip(levels, 0, 16) / 8.0 - 1.0
    bpd, out = dequantised_bits_per_dim(
        key, ExactScore(target), x, bin_width=DIGITS_BIN_WIDTH, rtol=1e-5, atol=1e-5
    )
    keys = [jax.random.split(jax.random.fold_in(key, i))[0] for i in range(3)]
    z = jnp.stack([dequantise(k, x_i, DIGITS_BIN_WIDTH) for k, x_i in zip(keys, x)])
    assert np.all((z >= x) & (z < x + DIGITS_BIN_WIDTH))
    corrected = _with_exact_prior(out, target)
    exact = target.ve_marginal(SIGMA_MIN).log_prob(z)
    assert np.max(np.abs(corrected - exact)) < _ode_tolerance(1e-5, 64)
    np.testing.assert_allclose(bpd, bits_per_dim(out.log_prob, 64, DIGITS_BIN_WIDTH), rtol=1e-6)


@pytest.mark.parametrize(
    "options",
    [dict(sigma_min=0.0), dict(process="edm"), dict(n_probes=0), dict(probe="uniform"),
     dict(solver="euler"), dict(rtol=0.0)],
)  # fmt: skip
def test_bad_options_are_rejected(mixture, options):
    with pytest.raises(ValueError):
        ode_log_likelihood(jax.random.key(0), ExactScore(mixture), jnp.zeros(2), **options)


@pytest.mark.slow  # ODE solves in several dimensions
def test_auto_is_the_exact_trace_up_to_its_dimension_and_one_probe_above(monkeypatch):
    from scorelab import likelihood

    target = gaussian(jnp.zeros(4), COVARIANCE)
    x = target.sample(jax.random.key(12), 1)[0]

    def run(n_probes):  # a fresh jit per call: EXACT_TRACE_MAX_DIM is read at trace time
        return jax.jit(
            lambda y: (
                ode_log_likelihood(
                    jax.random.key(13),
                    ExactScore(target),
                    y,
                    n_probes=n_probes,
                    rtol=1e-3,
                    atol=1e-3,
                ).log_prob
            )
        )(x)

    assert run("auto") == run("exact")
    monkeypatch.setattr(likelihood, "EXACT_TRACE_MAX_DIM", 3)
    assert run("auto") == run(1) != run("exact")


def test_auto_probes_are_the_basis_up_to_128_dimensions_and_one_probe_above():
    """The documented EXACT_TRACE_MAX_DIM = 128 at its edge: "auto" takes the exact basis at
    d = 128 and one Rademacher probe at d = 129 (not more: each costs a JVP per step)."""
    from scorelab.likelihood import EXACT_TRACE_MAX_DIM, _probes

    assert EXACT_TRACE_MAX_DIM == 128
    basis, exact = _probes(jax.random.key(0), "auto", "rademacher", jnp.zeros(128))
    assert exact and np.array_equal(basis, np.eye(128))
    probes, exact = _probes(jax.random.key(0), "auto", "rademacher", jnp.zeros(129))
    assert not exact and probes.shape == (1, 129) and set(np.unique(probes)) == {-1.0, 1.0}


def test_a_network_score_matches_an_independent_float64_solve():
    """Any score_fn: a random noise-conditional MLP (non-symmetric Jacobian, not a gradient;
    SiLU, so the field is smooth as the ODE theory and the step control need) against SciPy's
    DOP853 at rtol 1e-10 on the same augmented ODE in float64, its divergence the trace of
    jax.jacfwd, with the same prior."""
    from scipy.integrate import solve_ivp

    network = NoiseConditionalMLP(jax.random.key(14), dim=3, widths=(16, 16, 16), activation="silu")
    x = np.array([0.3, -1.2, 0.8])
    rtol = 1e-6
    out = log_likelihood(
        jax.random.key(0), network, jnp.asarray(x[None], jnp.float32), rtol=rtol, atol=rtol
    )

    with jax.enable_x64(True):

        @jax.jit
        def field(u, state):
            sigma, y = jnp.exp(u), state[:3]
            divergence = -(sigma**2) * jnp.trace(jax.jacfwd(network)(y, sigma))
            return jnp.append(-(sigma**2) * network(y, sigma), divergence)

        solution = solve_ivp(
            lambda u, state: np.asarray(field(u, state)),
            (math.log(SIGMA_MIN), math.log(SIGMA_MAX)),
            np.append(x, 0.0),
            method="DOP853",
            rtol=1e-10,
            atol=1e-10,
        )
        y_T, integral = solution.y[:3, -1], solution.y[3, -1]
        reference = float(_gaussian_log_prob(y_T, SIGMA_MAX**2) + integral)
    np.testing.assert_allclose(out.latent[0], y_T, rtol=1e-4)
    assert abs(float(out.log_prob[0]) - reference) < _ode_tolerance(rtol, 3)


# --- argument checks -----------------------------------------------------------------------------


def _unit_score(x, sigma):
    return -x / (1.0 + sigma**2)


@pytest.mark.parametrize(
    "dim, bin_width, message",
    [
        (2, 0.0, "bin_width: expected"),
        (2, -0.1, "bin_width: expected"),
        (2, float("nan"), "bin_width: expected"),
        (-2, 0.1, "dim: expected an integer >= 1"),
        (0, 0.1, "dim: expected an integer >= 1"),
        (2.5, 0.1, "dim: expected an integer >= 1"),
    ],
)
def test_bits_per_dim_names_a_bad_argument(dim, bin_width, message):
    """``bin_width = 0`` raised Python's bare 'math domain error'; ``dim = -2`` gave 1.16."""
    with pytest.raises(ValueError, match=message):
        bits_per_dim(-3.0, dim, bin_width)


@pytest.mark.parametrize("bin_width", [-1.0, 0.0, float("inf")])
def test_dequantise_rejects_a_bad_bin_width(bin_width):
    with pytest.raises(ValueError, match="bin_width: expected"):
        dequantise(jax.random.key(0), jnp.zeros(3), bin_width)


def test_log_likelihood_names_non_finite_points_and_out_of_range_levels():
    """A NaN point, or sigma_max = 1e30, ran the solve to max_steps, whose message blamed the
    tolerances."""
    points = jnp.array([[0.1, 0.2], [jnp.nan, 0.0]])
    with pytest.raises(ValueError, match="points: contains NaN or infinite values"):
        log_likelihood(jax.random.key(0), _unit_score, points)
    with pytest.raises(ValueError, match="x: contains NaN or infinite values"):
        ode_log_likelihood(jax.random.key(0), _unit_score, jnp.array([jnp.inf, 0.0]))
    good = jnp.zeros((1, 2))
    with pytest.raises(ValueError, match="sigma_max: 1e\\+30 is beyond"):
        log_likelihood(jax.random.key(0), _unit_score, good, sigma_max=1e30)
    with pytest.raises(ValueError, match="sigma_min: 1e-50 is below"):
        log_likelihood(jax.random.key(0), _unit_score, good, sigma_min=1e-50)


def test_the_largest_accepted_sigma_max_gives_the_closed_form():
    """The prior term's y_T**2 and 2 pi sigma_max**2 overflowed at the largest accepted
    sigma_max: a NumPy warning, and -inf for every point."""
    target = gaussian(jnp.zeros(2), jnp.eye(2))
    x = target.sample(jax.random.key(1), 4)
    rtol, sigma_max = 1e-5, 9.2e18
    out = log_likelihood(
        jax.random.key(0), ExactScore(target), x, sigma_max=sigma_max, rtol=rtol, atol=rtol
    )
    # The prior N(0, sigma_max^2) against the marginal N(0, 1 + sigma_max^2): 1e-38 apart.
    exact = target.ve_marginal(SIGMA_MIN).log_prob(x)
    tolerance = ODE_SLACK * rtol * 2 * math.log(sigma_max / SIGMA_MIN)
    assert np.max(np.abs(out.log_prob - exact)) < tolerance


def test_probes_that_cannot_fit_in_memory_are_refused_before_the_solve():
    with pytest.raises(ValueError, match="n_probes: needs .* of memory"):
        log_likelihood(jax.random.key(0), _unit_score, jnp.zeros((2, 2)), n_probes=10**12)


def test_half_precision_points_are_solved_in_float32_and_complex_ones_refused():
    """float16 points failed in the solve's tangents ('inconsistent with the original primal
    values'); complex points were blamed on sigma."""
    key, points = jax.random.key(0), jnp.array([[0.5, -1.0]])
    want = log_likelihood(key, _unit_score, points)
    for dtype in (jnp.float16, jnp.bfloat16):
        got = log_likelihood(key, _unit_score, points.astype(dtype))
        np.testing.assert_array_equal(got.log_prob, want.log_prob)
    with pytest.raises(TypeError, match="^points: expected real numbers, got complex64"):
        log_likelihood(key, _unit_score, points.astype(jnp.complex64))
    with pytest.raises(TypeError, match="^x: expected real numbers, got complex64"):
        dequantise(key, points[0].astype(jnp.complex64))


@pytest.mark.parametrize(
    ("score_fn", "error", "words"),
    [
        (lambda x, s: jnp.sum(x), ValueError, "score_fn: returned shape ()"),
        (lambda x, s: x.astype(jnp.complex64), TypeError, "score_fn: returned dtype complex64"),
    ],
)
def test_a_score_of_another_shape_or_dtype_is_named(score_fn, error, words):
    """Internal errors before: dot_general's contracting dimensions, a buffer's dtype."""
    with pytest.raises(error, match=re.escape(words)):
        log_likelihood(jax.random.key(0), score_fn, jnp.zeros((2, 2)))


def test_a_seed_is_not_a_key():
    for call in (
        lambda: log_likelihood(0, _unit_score, jnp.zeros((1, 2))),
        lambda: ode_log_likelihood(0, _unit_score, jnp.zeros(2)),
        lambda: dequantise(0, jnp.zeros(2)),
    ):
        with pytest.raises(TypeError, match="^key: expected a PRNG key"):
            call()


def test_log_likelihood_of_no_points_is_empty():
    """A zero-size batch failed inside diffrax ('zero-size array to reduction operation');
    the results of no points are empty arrays, and the options are still checked."""
    out = log_likelihood(jax.random.key(0), _unit_score, jnp.zeros((0, 2)))
    assert out.log_prob.shape == (0,) and out.latent.shape == (0, 2) and out.nfe.shape == (0,)
    assert out.log_prob.dtype == jnp.float32 and out.nfe.dtype == jnp.int32
    bpd, _ = dequantised_bits_per_dim(jax.random.key(0), _unit_score, jnp.zeros((0, 2)))
    assert bpd.shape == (0,)
    with pytest.raises(ValueError, match="rtol: expected"):
        log_likelihood(jax.random.key(0), _unit_score, jnp.zeros((0, 2)), rtol=2.0)


def test_likelihood_takes_lists_and_integer_points_as_floats():
    """``ode_log_likelihood`` of a list had no ``.shape``; integer points failed in
    ``jax.linearize``."""
    key = jax.random.key(0)
    want = ode_log_likelihood(key, _unit_score, jnp.array([1.0, 2.0]))
    got = ode_log_likelihood(key, _unit_score, [1.0, 2.0])
    np.testing.assert_array_equal(got.log_prob, want.log_prob)
    batch = log_likelihood(key, _unit_score, jnp.array([[1, 2]]))
    assert batch.log_prob.dtype == jnp.float32 and np.isfinite(batch.log_prob).all()


def test_one_point_s_probes_that_cannot_fit_are_refused_before_drawing():
    """``ode_log_likelihood(n_probes=10**12)`` aborted the interpreter (pass 19A, #1): only the
    batched :func:`log_likelihood` checked the probes' memory; the exact trace of a large
    point (``d`` basis vectors of ``d``) was not checked at all."""
    score = ExactScore(gaussian(jnp.zeros(2), jnp.eye(2)))
    with pytest.raises(ValueError, match=r"^n_probes: needs .* use fewer probes or points"):
        ode_log_likelihood(jax.random.key(0), score, jnp.array([0.5, -0.3]), n_probes=10**12)

    def standard(x, sigma):  # the score of N(0, (1 + sigma^2) I), in any dimension
        return -x / (1 + sigma**2)

    with pytest.raises(ValueError, match=r"^n_probes: needs .* give n_probes an integer"):
        log_likelihood(jax.random.key(0), standard, jnp.zeros((1, 200_000)), n_probes="exact")


def test_one_point_s_solve_errors_are_the_batched_ones():
    """``ode_log_likelihood`` raised diffrax's internal error where :func:`log_likelihood`
    raises :class:`~scorelab.samplers.SolveError`, and called an integer ``score_fn``."""
    from scorelab.samplers import SolveError

    score, x = ExactScore(gaussian(jnp.zeros(2), jnp.eye(2))), jnp.array([0.5, -0.3])
    with pytest.raises(SolveError, match=r"more than max_steps \(2\) steps"):
        ode_log_likelihood(jax.random.key(0), score, x, max_steps=2)
    with pytest.raises(TypeError, match=r"^score_fn: expected a callable"):
        ode_log_likelihood(jax.random.key(0), 3, x)


def test_a_score_that_is_not_finite_is_named_not_the_tolerances():
    """A model with NaN weights stopped the solve at max_steps, and the message said to loosen
    the tolerances, which could not help (pass 20B, F11); a finite score's stop still does."""
    from scorelab.samplers import SolveError

    points = jnp.array([[0.5, -0.3], [3.0, 1.0]])
    with pytest.raises(SolveError, match=r"^likelihood: the score is not finite"):
        log_likelihood(jax.random.key(0), lambda x, sigma: x * jnp.nan, points)
    score = ExactScore(gaussian(jnp.zeros(2), jnp.eye(2)))
    with pytest.raises(SolveError, match=r"more than max_steps \(2\) steps"):
        log_likelihood(jax.random.key(0), score, points, max_steps=2)


@pytest.mark.slow  # about 12 s of a worker: kept out of the default suite's 15 minutes
def test_a_lone_point_s_log_likelihood_is_its_value_in_any_batch():
    """A batch of one compiled to another program and differed in the last bits (9.5e-7)
    from the same point in a batch of two or four (pass 19A, #15)."""
    from scorelab.targets import seed_mixture

    score = ExactScore(seed_mixture())
    x = jnp.array([[0.5, -0.3], [3.0, 1.0], [-7.0, 2.0], [9.0, 9.0]])
    key = jax.random.key(0)
    full = log_likelihood(key, score, x)
    one = log_likelihood(key, score, x[:1])
    assert one.log_prob.shape == (1,) and one.latent.shape == (1, 2)
    assert float(one.log_prob[0]) == float(full.log_prob[0])
    assert int(one.nfe[0]) == int(full.nfe[0])


def test_bin_width_may_be_a_jax_scalar():
    """``bits_per_dim`` refused ``jnp.asarray(0.1)``, which ``dequantise`` takes."""
    assert float(bits_per_dim(-3.0, 2, jnp.asarray(0.1))) == float(bits_per_dim(-3.0, 2, 0.1))
    with pytest.raises(ValueError, match=r"^bin_width: expected a number > 0"):
        bits_per_dim(-3.0, 2, jnp.asarray(-0.1))

"""Losses: exact traces, unbiasedness and variance of the probe estimators, Gaussian closed
forms, the exact noised score as the minimiser of DSM / NCSN, and the training-sigma law.

Statistical checks use N_MC = 20000 fixed-seed draws and a tolerance of K_SE = 4 standard
errors, the SE estimated from the same draws (two-sided normal tail at 4 SE: 6e-5).
Every Monte-Carlo computation is one jitted call: compiling dominates this file's run time.

jaxlib 0.10.2 on CPU can deadlock when a jitted graph runs two independent batched LAPACK
calls (Cholesky / triangular solves, as in numpyro's MultivariateNormal) at once on a small
thread pool. So each jitted graph here holds at most one such computation, and the Gaussian
checks use closed-form scores and samples.
"""

import math
import re
from functools import partial
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.losses import (
    LOSSES,
    dsm_loss,
    hutchinson_loss,
    hyvarinen_loss,
    ncsn_loss,
    ncsn_weighting,
    sample_training_sigmas,
    sliced_score_matching_loss,
    vp_epsilon_loss,
)
from scorelab.models import MLP, ExactScore, NoiseConditionalMLP
from scorelab.targets import gaussian

N_MC = 20_000
K_SE = 4.0
DIM = 8  # large enough that the score term dominates SSM's variance at the MLP's points


def _mean_se(values):
    """Sample mean and its standard error std / sqrt(n), in float64."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


def _variance_se(values):
    """Sample variance and its standard error, the SE of the mean of (v - mean)^2."""
    values = np.asarray(values, dtype=np.float64)
    return _mean_se((values - values.mean()) ** 2)


@pytest.fixture(scope="module")
def mlp():
    """A random (untrained) small MLP score on R^8."""
    return MLP(jax.random.key(1), dim=DIM, widths=(32, 32))


@pytest.fixture(scope="module")
def points():
    """Three evaluation points, shape (3, 8)."""
    return jax.random.normal(jax.random.key(2), (3, DIM))


@pytest.fixture(scope="module")
def reference(mlp, points):
    """Independent reference at each point, from a full reverse-mode Jacobian J (float64):
    a list of (score, (J + J^T)/2, exact Hyvarinen loss tr J + |s|^2 / 2)."""

    @jax.jit
    @jax.vmap
    def score_and_jacobian(x):
        return mlp(x), jax.jacrev(mlp)(x)

    scores, jacobians = (np.asarray(a, np.float64) for a in score_and_jacobian(points))
    return [
        (score, 0.5 * (jacobian + jacobian.T), np.trace(jacobian) + 0.5 * score @ score)
        for score, jacobian in zip(scores, jacobians, strict=True)
    ]


# --- exact Hyvarinen loss --------------------------------------------------------------------


def test_hyvarinen_matches_full_jacobian(mlp, points, reference, key):
    losses = jax.jit(jax.vmap(lambda x: hyvarinen_loss(key, mlp, x)))(points)
    expected = [exact for _, _, exact in reference]
    # Forward- vs reverse-mode float32 sums of 8 terms: agree to a few ulps.
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-5)


def _conditional_score(x, sigma):
    """A cheap nonlinear noise-conditional score, shape (d,) -> (d,)."""
    return jnp.tanh(x) * sigma - x / (1.0 + sigma**2)


def test_sigma_is_passed_to_the_score(points, key):
    def at_fixed_sigma(x, sigma):
        del sigma
        return _conditional_score(x, 0.7)

    @jax.jit
    def both_ways(x):
        losses = (hyvarinen_loss, hutchinson_loss, sliced_score_matching_loss)
        passed = jnp.stack([loss_fn(key, _conditional_score, x, sigma=0.7) for loss_fn in losses])
        fixed = jnp.stack([loss_fn(key, at_fixed_sigma, x) for loss_fn in losses])
        return passed, fixed

    passed, fixed = both_ways(points[0])
    np.testing.assert_allclose(passed, fixed, rtol=1e-6)
    # and the value at another sigma differs, so sigma was not ignored
    assert not np.allclose(hyvarinen_loss(key, _conditional_score, points[0], sigma=0.2), passed[0])


def test_hyvarinen_loss_of_gaussian_true_score(key):
    """E[tr J + |s|^2 / 2] = -tr(P) + tr(P) / 2 = -tr(P) / 2 with P = Sigma^-1, J = -P."""
    mean = np.array([1.0, -2.0, 0.5])
    covariance = np.array([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 0.5]])
    target = gaussian(mean, covariance)
    precision = np.linalg.inv(covariance)

    def score_fn(x, sigma):
        del sigma
        return -jnp.asarray(precision, jnp.float32) @ (x - jnp.asarray(mean, jnp.float32))

    # Exact samples x = mean + L z with covariance = L L^T (cheaper to compile than numpyro's).
    cholesky = np.linalg.cholesky(covariance).astype(np.float32)
    x = mean.astype(np.float32) + jax.random.normal(key, (N_MC, 3)) @ cholesky.T
    np.testing.assert_allclose(
        jax.vmap(target.score)(x[:5]), jax.vmap(score_fn, (0, None))(x[:5], None), rtol=1e-4
    )
    losses = jax.jit(jax.vmap(lambda x: hyvarinen_loss(key, score_fn, x)))(x)
    loss_mean, se = _mean_se(losses)
    assert abs(loss_mean + 0.5 * np.trace(precision)) < K_SE * se
    # Pointwise, tr J = -tr(Sigma^-1) exactly; float32 error of the subtraction ~1e-6 relative.
    residual = np.asarray(x, np.float64) - mean
    half_score_norm = 0.5 * np.sum((residual @ precision) ** 2, axis=-1)
    np.testing.assert_allclose(losses - half_score_norm, -np.trace(precision), rtol=1e-4)


# --- unbiased probe estimators -----------------------------------------------------------------
# Per-probe variances, A = (J + J^T)/2: Gaussian v^T A v has variance 2 tr A^2; Rademacher
# 2 sum_{i != j} A_ij^2; plain SSM adds (v^T s)^2 / 2, i.e. uses A + s s^T / 2.


def _gaussian_variance(score, sym_jacobian):
    return 2.0 * np.sum(sym_jacobian**2)


def _rademacher_variance(score, sym_jacobian):
    return 2.0 * (np.sum(sym_jacobian**2) - np.sum(np.diag(sym_jacobian) ** 2))


def _plain_ssm_variance(score, sym_jacobian):
    return _gaussian_variance(score, sym_jacobian + 0.5 * np.outer(score, score))


ESTIMATORS = {
    "hutchinson-rademacher": (
        partial(hutchinson_loss, probe="rademacher"),
        "n_probes",
        _rademacher_variance,
    ),
    "hutchinson-gaussian": (
        partial(hutchinson_loss, probe="gaussian"),
        "n_probes",
        _gaussian_variance,
    ),
    "sliced": (sliced_score_matching_loss, "n_projections", _plain_ssm_variance),
    "sliced-vr": (
        partial(sliced_score_matching_loss, variance_reduction=True),
        "n_projections",
        _gaussian_variance,
    ),
}


def _single_probe_estimates(loss_fn, score_fn, points, key):
    """One-probe estimates, shape (n_points, N_MC): probe k of every point from key k."""
    probe_keys = jax.random.split(key, N_MC)
    over_probes = jax.vmap(lambda k, x: loss_fn(k, score_fn, x), (0, None))
    return jax.vmap(over_probes, (None, 0))(probe_keys, points)


def _many_probe_losses(loss_fn, count_field, score_fn, points, key):
    """The loss with all N_MC probes in one call, shape (n_points,)."""
    return jax.vmap(lambda x: loss_fn(key, score_fn, x, **{count_field: N_MC}))(points)


@pytest.fixture(scope="module")
def probe_estimates(mlp, points):
    """Per estimator: one-probe estimates (n_points, N_MC) and the N_MC-probe loss (n_points,).

    All estimators share the probe keys, so SSM and SSM-VR see the same projections.
    """
    key_single, key_batched = jax.random.split(jax.random.key(5))

    @jax.jit
    def estimate_all(points):
        return {
            name: (
                _single_probe_estimates(loss_fn, mlp, points, key_single),
                _many_probe_losses(loss_fn, count_field, mlp, points, key_batched),
            )
            for name, (loss_fn, count_field, _) in ESTIMATORS.items()
        }

    return jax.tree.map(lambda a: np.asarray(a, np.float64), estimate_all(points))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_probe_estimator_is_unbiased_with_closed_form_variance(name, reference, probe_estimates):
    variance_fn = ESTIMATORS[name][2]
    single, batched = probe_estimates[name]
    for (score, sym_jacobian, exact), estimates, batched_mean in zip(
        reference, single, batched, strict=True
    ):
        estimate_mean, se = _mean_se(estimates)
        assert abs(estimate_mean - exact) < K_SE * se
        # All N_MC probes in one call: its mean has the same SE as the one-probe sample mean.
        assert abs(batched_mean - exact) < K_SE * se
        variance, variance_se = _variance_se(estimates)
        assert abs(variance - variance_fn(score, sym_jacobian)) < K_SE * variance_se


def test_variance_reduction_lowers_variance(reference, probe_estimates):
    """Same projections for both (same keys), so the variance gap is a paired mean:
    gap = mean((p - p_bar)^2 - (r - r_bar)^2), closed form |s|^4 / 2 + 2 s^T A s."""
    plain, _ = probe_estimates["sliced"]
    reduced, _ = probe_estimates["sliced-vr"]
    for (score, sym_jacobian, _), p, r in zip(reference, plain, reduced, strict=True):
        gap, se = _mean_se((p - p.mean()) ** 2 - (r - r.mean()) ** 2)
        expected_gap = 0.5 * (score @ score) ** 2 + 2.0 * score @ sym_jacobian @ score
        assert abs(gap - expected_gap) < K_SE * se
        # At these points the gap is 4 to 9 per projection, about 35 SE.
        assert gap > K_SE * se


def test_variance_reduction_is_not_universal(key):
    """The docstring's counter-example: s(x) = -x (N(0, I_2)) at x = (1, 0). Plain SSM has
    variance 2 tr((-I + x x^T / 2)^2) = 2.5 per projection, SSM-VR 2 tr(I) = 4."""

    def score_fn(x, sigma):
        del sigma
        return -x

    @jax.jit
    def plain_and_reduced(x):
        plain = _single_probe_estimates(sliced_score_matching_loss, score_fn, x, key)
        reduced = _single_probe_estimates(
            partial(sliced_score_matching_loss, variance_reduction=True), score_fn, x, key
        )
        return plain[0], reduced[0]

    plain, reduced = plain_and_reduced(jnp.array([[1.0, 0.0]]))
    for estimates, expected in ((plain, 2.5), (reduced, 4.0)):
        variance, se = _variance_se(estimates)
        assert abs(variance - expected) < K_SE * se


def test_sliced_vr_equals_gaussian_hutchinson(mlp, points, key):
    @jax.jit
    @jax.vmap
    def both(x):
        return (
            sliced_score_matching_loss(key, mlp, x, n_projections=5, variance_reduction=True),
            hutchinson_loss(key, mlp, x, n_probes=5, probe="gaussian"),
        )

    sliced, hutchinson = both(points)
    np.testing.assert_array_equal(sliced, hutchinson)


@pytest.mark.parametrize("n", [pytest.param(2, marks=pytest.mark.slow), 8])  # 2: many layouts
def test_small_map_layouts_agree(monkeypatch, points, key, n):
    # The losses map over up to 8 probes (trace losses) or sigmas (ncsn_loss) one call at a time
    # on a CPU and vmap them on an accelerator (scorelab.losses._UNROLLED_MAP): both must give
    # the same losses and gradients, up to float32 reassociation.
    import scorelab.losses as losses_module

    net = NoiseConditionalMLP(jax.random.key(1), dim=DIM, widths=(32, 32, 32))

    def losses_and_grads():
        def batch_loss(net):
            per_example = jax.vmap(
                lambda x: (
                    hyvarinen_loss(key, net, x, sigma=0.5)
                    + hutchinson_loss(key, net, x, n_probes=n, sigma=0.5)
                    + ncsn_loss(key, net, x, n_sigmas=n)
                )
            )
            return jnp.mean(per_example(points))

        return jax.value_and_grad(batch_loss)(net)

    monkeypatch.setattr(losses_module, "_unroll", lambda n: True)
    unrolled = losses_and_grads()
    monkeypatch.setattr(losses_module, "_unroll", lambda n: False)
    vmapped = losses_and_grads()
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(vmapped), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6 * float(np.abs(a).max()))


# --- denoising losses ------------------------------------------------------------------------


def _scale_derivatives(loss_fn, score_fn, x_0, key):
    """Per-example d/dc loss_fn(key_i, c * score_fn, x_0[i]) at c = 1, key_i = fold_in(key, i)."""

    def derivative(index, x):
        example_key = jax.random.fold_in(key, index)

        def loss_at(scale):
            return loss_fn(example_key, lambda y, sigma: scale * score_fn(y, sigma), x)

        return jax.grad(loss_at)(1.0)

    return jax.vmap(derivative)(jnp.arange(x_0.shape[0]), x_0)


@pytest.fixture(scope="module")
def denoising_derivatives(mixture):
    """``derivatives(case, sigma_factor)``: per-example scale derivatives on N_MC mixture
    samples for the score ``ExactScore(mixture)(x, sigma_factor * sigma)``; the factor is 1 for
    the exact noised score. Traced sigma and factor: two compilations for all cases, and one
    LAPACK computation per graph (see the module docstring)."""
    exact = ExactScore(mixture)
    x_0 = mixture.sample(jax.random.key(6), N_MC)
    key_noise = jax.random.key(7)

    def scaled(sigma_factor):
        return lambda x, sigma: exact(x, sigma_factor * sigma)

    @jax.jit
    def dsm(x_0, sigma, sigma_factor):
        loss_fn = partial(dsm_loss, sigma=sigma)
        return _scale_derivatives(loss_fn, scaled(sigma_factor), x_0, key_noise)

    @jax.jit
    def ncsn(x_0, sigma_factor):
        loss_fn = partial(ncsn_loss, n_sigmas=2)
        return _scale_derivatives(loss_fn, scaled(sigma_factor), x_0, key_noise)

    cases = {
        "dsm-0.5": partial(dsm, x_0, 0.5),
        "dsm-2": partial(dsm, x_0, 2.0),
        "ncsn": partial(ncsn, x_0),
    }
    return lambda case, sigma_factor: cases[case](sigma_factor)


@pytest.mark.parametrize("case", ["dsm-0.5", "dsm-2", "ncsn"])
def test_exact_noised_score_minimises_denoising_loss(case, denoising_derivatives):
    """d/dc E||c s + eps/sigma||^2 at c = 1 is 2 E[s . (s + eps/sigma)], zero for the noised
    score because E[eps | x_sigma] = -sigma grad log q_sigma(x_sigma) (Tweedie)."""
    derivative, se = _mean_se(denoising_derivatives(case, 1.0))
    assert abs(derivative) < K_SE * se
    # The same criterion rejects a wrong score, the noised score at twice the noise level
    # (its mean derivative is over 100 SE from zero in every case).
    derivative, se = _mean_se(denoising_derivatives(case, 2.0))
    assert abs(derivative) > K_SE * se


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_dsm_of_exact_score_closed_form(sigma, key):
    """For q = N(0, s0^2 I_d): E dsm(s*) = d / sigma^2 - E|s*|^2 = d/sigma^2 - d/(s0^2+sigma^2)."""
    dim, data_std = 2, 1.5
    key_data, key_noise = jax.random.split(key)
    x_0 = data_std * jax.random.normal(key_data, (N_MC, dim))

    def exact(x, sigma):
        """The noised score grad log N(x; 0, (s0^2 + sigma^2) I)."""
        return -x / (data_std**2 + sigma**2)

    @jax.jit
    @jax.vmap
    def unweighted_and_weighted(index, x):
        example_key = jax.random.fold_in(key_noise, index)
        return tuple(
            dsm_loss(example_key, exact, x, sigma=sigma, weighting_fn=weighting_fn)
            for weighting_fn in (None, ncsn_weighting)
        )

    losses, weighted = unweighted_and_weighted(jnp.arange(N_MC), x_0)
    loss_mean, se = _mean_se(losses)
    assert abs(loss_mean - (dim / sigma**2 - dim / (data_std**2 + sigma**2))) < K_SE * se
    np.testing.assert_allclose(weighted, sigma**2 * losses, rtol=1e-6)


# --- training sigmas ---------------------------------------------------------------------------


def test_lognormal_sigmas_are_the_tutorials_draw(key):
    """Parity with the tutorial's expression on the same key, then the law itself."""
    tutorial = jnp.exp(jax.random.normal(key, (100,)) * 1.2 - 0.5).clip(0.02, 10.0)
    np.testing.assert_allclose(sample_training_sigmas(key, (100,)), tutorial, rtol=1e-6)

    # A narrow range so both clipping atoms carry mass (about 6.7% and 9.1%).
    sigma_min, sigma_max = 0.1, 3.0
    sigmas = np.asarray(
        sample_training_sigmas(key, (N_MC,), sigma_min=sigma_min, sigma_max=sigma_max)
    )
    log_sigma_law = NormalDist(-0.5, 1.2)
    assert sigmas.min() >= np.float32(sigma_min) and sigmas.max() <= np.float32(sigma_max)
    # Each check is a binomial proportion, SE sqrt(p (1 - p) / n).
    checks = [(np.mean(sigmas <= math.exp(log_sigma_law.inv_cdf(p))), p) for p in (0.25, 0.5, 0.75)]
    checks.append(
        (np.mean(sigmas == np.float32(sigma_min)), log_sigma_law.cdf(math.log(sigma_min)))
    )
    checks.append(
        (np.mean(sigmas == np.float32(sigma_max)), 1 - log_sigma_law.cdf(math.log(sigma_max)))
    )
    for fraction, p in checks:
        assert abs(fraction - p) < K_SE * math.sqrt(p * (1 - p) / N_MC)


def test_loguniform_sigmas_cover_the_range_in_log_space(key):
    sigma_min, sigma_max = 0.02, 10.0
    sigmas = np.asarray(
        sample_training_sigmas(
            key, (N_MC,), sigma_min=sigma_min, sigma_max=sigma_max, distribution="loguniform"
        ),
        dtype=np.float64,
    )
    assert sigmas.min() >= np.float32(sigma_min) and sigmas.max() <= np.float32(sigma_max)
    position = np.log(sigmas / sigma_min) / math.log(sigma_max / sigma_min)  # U(0, 1)
    for u in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.mean(position <= u) - u) < K_SE * math.sqrt(u * (1 - u) / N_MC)
    # Both ends are reached: P(all N_MC draws avoid [0, 0.001]) = 0.999^20000 = 2e-9.
    assert position.min() < 1e-3 and position.max() > 1 - 1e-3


# --- validation and per-example shape ----------------------------------------------------------


def _identity_score(x, sigma):
    del sigma
    return x


_KEY = jax.random.key(0)
_X = jnp.zeros(2)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: hutchinson_loss(_KEY, _identity_score, _X, n_probes=0), "n_probes: expected"),
        (
            lambda: hutchinson_loss(_KEY, _identity_score, _X, probe="normal"),
            r"probe: unknown value .normal.; accepted: rademacher, gaussian",
        ),
        (
            lambda: sliced_score_matching_loss(_KEY, _identity_score, _X, n_projections=1.5),
            "n_projections: expected an integer >= 1",
        ),
        (lambda: ncsn_loss(_KEY, _identity_score, _X, n_sigmas=0), "n_sigmas: expected"),
        (
            lambda: ncsn_loss(_KEY, _identity_score, _X, sigma_min=1.0, sigma_max=0.5),
            "sigma_min must be < sigma_max",
        ),
        (lambda: ncsn_loss(_KEY, _identity_score, _X, sigma_min=0.0), "sigma_min must be > 0"),
        (
            lambda: ncsn_loss(_KEY, _identity_score, _X, sigma_distribution="uniform"),
            "sigma_distribution: unknown value",
        ),
        (
            lambda: sample_training_sigmas(_KEY, (3,), distribution="normal"),
            "distribution: unknown value",
        ),
    ],
)
def test_invalid_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_validation_works_under_jit():
    """Hyper-parameters are static, so a bad one is reported while tracing, not as a tracer
    error."""
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        jax.jit(lambda x: ncsn_loss(_KEY, _identity_score, x, sigma_min=30.0))(_X)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_are_per_example(name, key):
    hyper = {} if name in ("ncsn", "vp_epsilon") else {"sigma": 0.5}
    key_x, key_loss = jax.random.split(key)
    x = jax.random.normal(key_x, (5, 2))
    keys = jax.random.split(key_loss, 5)

    @jax.jit
    def batch_and_single(keys, x):
        batch = jax.vmap(lambda k, x: LOSSES[name](k, _conditional_score, x, **hyper))(keys, x)
        return batch, LOSSES[name](keys[1], _conditional_score, x[1], **hyper)

    losses, single = batch_and_single(keys, x)
    assert losses.shape == (5,) and bool(jnp.all(jnp.isfinite(losses)))
    np.testing.assert_allclose(losses[1], single, rtol=1e-5)


@pytest.mark.parametrize("loss", ["hyvarinen", "hutchinson", "sliced"])
def test_trace_losses_take_an_image_shaped_example(loss):
    """A ``(1, 2, 2)`` example of the standard normal, score ``-x``: ``tr J = -4`` and
    ``v^T J v = -|v|^2``, so the exact loss is ``-4 + |x|^2 / 2``, and Hutchinson's
    Rademacher probes (``|v|^2 = 4``) give it exactly. A ``(1, 8, 8)`` digit met ``(8,)``
    probes and failed inside ``jax.linearize`` ("scorelab train --data digits --loss
    hyvarinen")."""
    x = jnp.arange(4.0).reshape(1, 2, 2) / 4.0
    exact = -4.0 + 0.5 * float(jnp.sum(x**2))
    fn = {
        "hyvarinen": hyvarinen_loss,
        "hutchinson": hutchinson_loss,
        "sliced": partial(sliced_score_matching_loss, variance_reduction=True),
    }[loss]
    value = fn(jax.random.key(0), lambda y, sigma: -y, x)
    flat = fn(jax.random.key(0), lambda y, sigma: -y, x.reshape(-1))
    np.testing.assert_allclose(value, flat, rtol=1e-6)
    if loss != "sliced":  # Gaussian projections: exact only in expectation
        np.testing.assert_allclose(value, exact, rtol=1e-6)


# --- argument checks -----------------------------------------------------------------------------


def _linear_score(x, sigma):
    return -x


@pytest.mark.parametrize("sigma_data", [-1.0, 0.0, float("nan"), float("inf")])
def test_edm_weighting_rejects_a_bad_sigma_data(sigma_data):
    """A negative ``sigma_data`` was squared away (weight 2.0), zero divided by zero."""
    from scorelab.losses import edm_weighting

    with pytest.raises(ValueError, match="sigma_data: expected"):
        edm_weighting(1.0, sigma_data)
    assert float(jax.jit(edm_weighting)(1.0, 0.5)) == pytest.approx(5.0)  # traced: unchecked


@pytest.mark.parametrize("p_mean", [float("nan"), float("inf")])
def test_training_sigmas_reject_a_non_finite_p_mean(p_mean):
    """p_std was checked and p_mean was not: a NaN mean gave NaN sigmas and a NaN loss."""
    with pytest.raises(ValueError, match="p_mean: expected"):
        sample_training_sigmas(jax.random.key(0), (4,), p_mean=p_mean)
    with pytest.raises(ValueError, match="p_mean: expected"):
        ncsn_loss(jax.random.key(0), _linear_score, jnp.ones(2), p_mean=p_mean)


@pytest.mark.parametrize(
    "shape, error",
    [((-1,), ValueError), ((2, -3), ValueError), ((2.5,), ValueError), (4.0, TypeError)],
)
def test_training_sigmas_name_a_bad_shape(shape, error):
    """``(-1,)`` failed inside MLIR with 'Invalid type'."""
    with pytest.raises(error, match="shape: expected a tuple of integers >= 0"):
        sample_training_sigmas(jax.random.key(0), shape)
    assert sample_training_sigmas(jax.random.key(0), [0]).shape == (0,)


@pytest.mark.parametrize("sigma", [0.0, -0.5, float("nan"), float("inf"), np.float32(0.0)])
def test_dsm_loss_rejects_a_concrete_sigma_not_positive(sigma):
    """``sigma = 0`` returned an infinite loss."""
    with pytest.raises(ValueError, match="sigma: expected"):
        dsm_loss(jax.random.key(0), _linear_score, jnp.ones(2), sigma=sigma)


def test_dsm_loss_rejects_a_vector_sigma_even_traced():
    """A vector sigma was applied per dimension; the shape is static, so it is caught under
    jit as well, while a traced scalar sigma is not value-checked."""
    with pytest.raises(ValueError, match=r"sigma: expected a scalar noise level, got shape \(2,\)"):
        dsm_loss(jax.random.key(0), _linear_score, jnp.ones(2), sigma=jnp.array([0.5, 0.5]))
    jitted = jax.jit(lambda x, s: dsm_loss(jax.random.key(0), _linear_score, x, sigma=s))
    with pytest.raises(ValueError, match="sigma: expected a scalar noise level"):
        jitted(jnp.ones(2), jnp.array([0.5, 0.5]))
    assert np.isfinite(jitted(jnp.ones(2), 0.5))
    batch = jax.vmap(lambda x, s: dsm_loss(jax.random.key(0), _linear_score, x, sigma=s))
    assert batch(jnp.ones((3, 2)), jnp.full(3, 0.5)).shape == (3,)


def test_losses_take_lists_and_integer_examples_as_floats():
    """An integer x failed in ``jax.linearize`` ('tangent values inconsistent with the primal');
    a list x had no ``.shape``. Both are taken as JAX's default float."""
    key = jax.random.key(0)
    floats = jnp.array([1.0, 2.0])
    for loss in (hyvarinen_loss, hutchinson_loss, sliced_score_matching_loss):
        want = loss(key, _linear_score, floats)
        np.testing.assert_array_equal(loss(key, _linear_score, jnp.array([1, 2])), want)
        np.testing.assert_array_equal(loss(key, _linear_score, [1.0, 2.0]), want)
    want = dsm_loss(key, _linear_score, floats, sigma=0.5)
    np.testing.assert_array_equal(dsm_loss(key, _linear_score, [1.0, 2.0], sigma=0.5), want)
    np.testing.assert_array_equal(dsm_loss(key, _linear_score, jnp.array([1, 2]), sigma=0.5), want)


# --- hostile inputs: each refused with a one-line message naming the argument ------------------


def _scalar_score(x, sigma):
    return jnp.sum(x)


def _conditional_linear_score(x, sigma, label):
    return -x


_X2 = jnp.array([1.0, -2.0])
_COMPLEX = _X2.astype(jnp.complex64)
_HUGE = 10**12
_SHAPE_MESSAGE = "score_fn: returned shape () for an example of shape (2,); it must return"

_HOSTILE = {
    # score_fn: a score of another shape than its example (broadcast silently, or failed
    # inside dot_general), of an integer dtype, or not an array (the samplers' check).
    "dsm-scalar-score": (
        lambda: dsm_loss(_KEY, _scalar_score, _X2, sigma=1.0),
        ValueError,
        _SHAPE_MESSAGE,
    ),
    "dsm-(1,)-score": (
        lambda: dsm_loss(_KEY, lambda x, s: jnp.sum(x, keepdims=True), _X2, sigma=1.0),
        ValueError,
        "score_fn: returned shape (1,) for an example of shape (2,)",
    ),
    "dsm-(2,d)-score": (
        lambda: dsm_loss(_KEY, lambda x, s: jnp.stack([x, x]), _X2, sigma=1.0),
        ValueError,
        "score_fn: returned shape (2, 2) for an example of shape (2,)",
    ),
    "ncsn-scalar-score": (lambda: ncsn_loss(_KEY, _scalar_score, _X2), ValueError, _SHAPE_MESSAGE),
    "vp-scalar-score": (
        lambda: LOSSES["vp_epsilon"](_KEY, _scalar_score, _X2),
        ValueError,
        _SHAPE_MESSAGE,
    ),
    "hyvarinen-scalar-score": (
        lambda: hyvarinen_loss(_KEY, _scalar_score, _X2),
        ValueError,
        _SHAPE_MESSAGE,
    ),
    "hutchinson-scalar-score": (
        lambda: hutchinson_loss(_KEY, _scalar_score, _X2),
        ValueError,
        _SHAPE_MESSAGE,
    ),
    "sliced-scalar-score": (
        lambda: sliced_score_matching_loss(_KEY, _scalar_score, _X2),
        ValueError,
        _SHAPE_MESSAGE,
    ),
    "hyvarinen-integer-score": (
        lambda: hyvarinen_loss(_KEY, lambda x, s: jnp.round(x).astype(int), _X2),
        TypeError,
        "score_fn: returned dtype int32; it must return real floating-point numbers",
    ),
    "dsm-tuple-score": (
        lambda: dsm_loss(_KEY, lambda x, s: (x, x), _X2, sigma=1.0),
        TypeError,
        "score_fn: returned tuple for an example of shape (2,)",
    ),
    "dsm-score_fn-not-callable": (
        lambda: dsm_loss(_KEY, 3, _X2, sigma=1.0),
        TypeError,
        "score_fn: expected a callable",
    ),
    # weighting_fn: a non-scalar weight (a (3,) 'loss', or averaged away), a number.
    "dsm-vector-weight": (
        lambda: dsm_loss(_KEY, _linear_score, _X2, sigma=1.0, weighting_fn=lambda s: jnp.ones(3)),
        ValueError,
        "weighting_fn: returned shape (3,) for a scalar sigma; it must return one weight",
    ),
    "ncsn-vector-weight": (
        lambda: ncsn_loss(_KEY, _linear_score, _X2, weighting_fn=lambda s: jnp.ones(3)),
        ValueError,
        "weighting_fn: returned shape (3,)",
    ),
    "dsm-complex-weight": (
        lambda: dsm_loss(_KEY, _linear_score, _X2, sigma=1.0, weighting_fn=lambda s: s + 1j),
        TypeError,
        "weighting_fn: returned complex",
    ),
    "dsm-weighting_fn-number": (
        lambda: dsm_loss(_KEY, _linear_score, _X2, sigma=2.0, weighting_fn=2.0),
        TypeError,
        "weighting_fn: expected a callable",
    ),
    "ncsn-weighting_fn-number": (
        lambda: ncsn_loss(_KEY, _linear_score, _X2, weighting_fn=2.0),
        TypeError,
        "weighting_fn: expected a callable",
    ),
    # x: complex (a complex 'loss'), boolean, empty, non-finite, not numbers.
    "dsm-complex-x": (
        lambda: dsm_loss(_KEY, _linear_score, _COMPLEX, sigma=1.0),
        TypeError,
        "x_0: expected real numbers, got complex64",
    ),
    "hyvarinen-complex-x": (
        lambda: hyvarinen_loss(_KEY, _linear_score, _COMPLEX),
        TypeError,
        "x: expected real numbers, got complex64",
    ),
    "hutchinson-complex-x": (
        lambda: hutchinson_loss(_KEY, _linear_score, _COMPLEX),
        TypeError,
        "x: expected real numbers, got complex64",
    ),
    "sliced-complex-x": (
        lambda: sliced_score_matching_loss(_KEY, _linear_score, _COMPLEX),
        TypeError,
        "x: expected real numbers, got complex64",
    ),
    "ncsn-complex-x": (
        lambda: ncsn_loss(_KEY, _linear_score, _COMPLEX),
        TypeError,
        "x_0: expected real numbers, got complex64",
    ),
    "vp-complex-x": (
        lambda: LOSSES["vp_epsilon"](_KEY, _linear_score, _COMPLEX),
        TypeError,
        "x_0: expected real numbers, got complex64",
    ),
    "dsm-bool-x": (
        lambda: dsm_loss(_KEY, _linear_score, np.array([True, False]), sigma=1.0),
        TypeError,
        "x_0: expected real numbers, got bool",
    ),
    "hyvarinen-empty-x": (
        lambda: hyvarinen_loss(_KEY, _linear_score, jnp.ones((0,))),
        ValueError,
        "x: expected one example of d >= 1 entries, got shape (0,)",
    ),
    "dsm-nan-x": (
        lambda: dsm_loss(_KEY, _linear_score, jnp.array([jnp.nan, 1.0]), sigma=1.0),
        ValueError,
        "x_0: expected finite numbers, got 1 NaN or infinite entries",
    ),
    "hutchinson-inf-x": (
        lambda: hutchinson_loss(_KEY, _linear_score, [np.inf, 1.0]),
        ValueError,
        "x: expected finite numbers",
    ),
    "dsm-string-x": (
        lambda: dsm_loss(_KEY, _linear_score, ["a", "b"], sigma=1.0),
        TypeError,
        "x_0: expected an array of real numbers (one example), got list",
    ),
    # sigma: beyond the float32 floor / ceiling of a variance, complex.
    "dsm-sigma-below-floor": (
        lambda: dsm_loss(_KEY, _linear_score, _X2, sigma=1e-30),
        ValueError,
        "sigma: 1e-30 is below 1.1e-19",
    ),
    "dsm-sigma-beyond-ceiling": (
        lambda: dsm_loss(_KEY, _linear_score, _X2, sigma=1e20),
        ValueError,
        "sigma: 1e+20 is beyond 9.2e18",
    ),
    "dsm-complex-sigma": (
        lambda: dsm_loss(_KEY, _linear_score, _X2, sigma=1.0 + 1j),
        TypeError,
        "sigma: expected real numbers > 0",
    ),
    "dsm-traced-complex-sigma": (
        lambda: jax.jit(lambda s: dsm_loss(_KEY, _linear_score, _X2, sigma=s))(1.0 + 1j),
        TypeError,
        "sigma: expected a real noise level > 0, got dtype complex64",
    ),
    # counts that would allocate terabytes.
    "hyvarinen-huge-d": (
        lambda: hyvarinen_loss(_KEY, _linear_score, jnp.ones((200_000,))),
        ValueError,
        "x: needs",
    ),
    "training-sigmas-huge-shape": (
        lambda: sample_training_sigmas(_KEY, (_HUGE,)),
        ValueError,
        "shape: needs",
    ),
    "hutchinson-huge-n_probes": (
        lambda: hutchinson_loss(_KEY, _linear_score, _X2, n_probes=_HUGE),
        ValueError,
        "n_probes: needs",
    ),
    "sliced-huge-n_projections": (
        lambda: sliced_score_matching_loss(_KEY, _linear_score, _X2, n_projections=_HUGE),
        ValueError,
        "n_projections: needs",
    ),
    "ncsn-huge-n_sigmas": (
        lambda: ncsn_loss(_KEY, _linear_score, _X2, n_sigmas=10**11),
        ValueError,
        "n_sigmas: needs",
    ),
    "vp-huge-num_train_timesteps": (
        lambda: LOSSES["vp_epsilon"](_KEY, _linear_score, _X2, num_train_timesteps=_HUGE),
        ValueError,
        "num_train_timesteps: needs",
    ),
    # vp_epsilon_loss: labels, timesteps.
    "vp-float-class_label": (
        lambda: LOSSES["vp_epsilon"](_KEY, _conditional_linear_score, _X2, 2.5),
        TypeError,
        "class_label: expected an integer class >= 0, got float",
    ),
    "vp-bool-class_label": (
        lambda: LOSSES["vp_epsilon"](_KEY, _conditional_linear_score, _X2, True),
        TypeError,
        "class_label: expected an integer class >= 0",
    ),
    "vp-vector-class_label": (
        lambda: LOSSES["vp_epsilon"](_KEY, _conditional_linear_score, _X2, jnp.array([1, 2])),
        ValueError,
        "class_label: expected one integer class (a scalar) for one example, got shape (2,)",
    ),
    "vp-negative-class_label": (
        lambda: LOSSES["vp_epsilon"](_KEY, _conditional_linear_score, _X2, jnp.array(-1)),
        ValueError,
        "class_label: expected an integer class >= 0, got -1",
    ),
    "vp-negative-null_label": (
        lambda: LOSSES["vp_epsilon"](
            _KEY, _conditional_linear_score, _X2, 3, label_dropout=0.5, null_label=-5
        ),
        ValueError,
        "null_label: expected an integer class >= 0, got -5",
    ),
    "vp-float-null_label": (
        lambda: LOSSES["vp_epsilon"](
            _KEY, _conditional_linear_score, _X2, 3, label_dropout=0.5, null_label=2.5
        ),
        TypeError,
        "null_label: expected an integer class >= 0, got float",
    ),
    "vp-bool-num_train_timesteps": (
        lambda: LOSSES["vp_epsilon"](_KEY, _linear_score, _X2, num_train_timesteps=True),
        ValueError,
        "num_train_timesteps: expected an integer >= 1, got True",
    ),
    "vp-float-num_train_timesteps": (
        lambda: LOSSES["vp_epsilon"](_KEY, _linear_score, _X2, num_train_timesteps=10.5),
        ValueError,
        "num_train_timesteps: expected an integer >= 1",
    ),
    # other flags.
    "sliced-string-variance_reduction": (
        lambda: sliced_score_matching_loss(_KEY, _linear_score, _X2, variance_reduction="no"),
        TypeError,
        "variance_reduction: expected True or False, got 'no'",
    ),
}


@pytest.mark.parametrize("case", list(_HOSTILE))
def test_hostile_input_is_refused_naming_the_argument(case):
    call, error, message = _HOSTILE[case]
    with pytest.raises(error, match=re.escape(message)) as caught:
        call()
    assert "\n" not in str(caught.value)  # one line


_KEYED_CALLS = {
    "hyvarinen": lambda key: hyvarinen_loss(key, _linear_score, _X2),
    "hutchinson": lambda key: hutchinson_loss(key, _linear_score, _X2),
    "sliced": lambda key: sliced_score_matching_loss(key, _linear_score, _X2),
    "dsm": lambda key: dsm_loss(key, _linear_score, _X2, sigma=1.0),
    "ncsn": lambda key: ncsn_loss(key, _linear_score, _X2),
    "vp_epsilon": lambda key: LOSSES["vp_epsilon"](key, _linear_score, _X2),
    "training-sigmas": lambda key: sample_training_sigmas(key, (3,)),
}


@pytest.mark.parametrize("name", list(_KEYED_CALLS))
@pytest.mark.parametrize(
    "bad_key, message",
    [
        (0, "key: expected a PRNG key (jax.random.key(seed)), got int"),
        (jax.random.split(_KEY, 3), "key: expected one PRNG key, got an array of keys (3,)"),
        (jnp.zeros(2), "key: expected a PRNG key (jax.random.key(seed)), got"),
    ],
)
def test_every_loss_names_a_bad_key(name, bad_key, message):
    """An int seed gave JAX's 'invalid PRNG key data', a batch of keys 'normal accepts a
    single key'."""
    with pytest.raises(TypeError, match=re.escape(message)):
        _KEYED_CALLS[name](bad_key)


def test_the_exact_trace_takes_no_key():
    """It draws nothing: the tutorial calls it with None (refused for a while, as a bad key)."""
    x = jnp.array([1.0, -2.0])
    assert hyvarinen_loss(None, lambda y, s: -y, x) == hyvarinen_loss(
        jax.random.key(0), lambda y, s: -y, x
    )


@pytest.mark.parametrize("name", list(_KEYED_CALLS))
def test_legacy_keys_give_the_same_values_as_typed_keys(name):
    legacy = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(
        _KEYED_CALLS[name](legacy), _KEYED_CALLS[name](jax.random.wrap_key_data(legacy))
    )


def test_shape_checks_run_while_traced():
    """Shapes and dtypes are static: a wrong score or weight is refused under jit and vmap,
    with traced examples, sigmas and labels."""
    xs = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=re.escape(_SHAPE_MESSAGE)):
        jax.jit(jax.vmap(lambda x: dsm_loss(_KEY, _scalar_score, x, sigma=0.5)))(xs)
    with pytest.raises(ValueError, match=re.escape("weighting_fn: returned shape (3,)")):
        jax.vmap(
            lambda x, s: dsm_loss(_KEY, _linear_score, x, sigma=s, weighting_fn=jnp.ones(3).__add__)
        )(xs, jnp.full(3, 0.5))
    with pytest.raises(TypeError, match=re.escape("class_label: expected an integer class")):
        jax.vmap(lambda x, y: LOSSES["vp_epsilon"](_KEY, _conditional_linear_score, x, y))(
            xs, jnp.ones(3)
        )
    with pytest.raises(TypeError, match=re.escape("score_fn: returned dtype int32")):
        jax.jit(jax.grad(lambda x: hutchinson_loss(_KEY, lambda y, s: y.astype(int), x)))(_X2)
    # Valid traced labels are taken; a traced negative label is not value-checked.
    labels = jnp.array([0, 1, 2], jnp.int32)
    values = jax.jit(
        jax.vmap(lambda x, y: LOSSES["vp_epsilon"](_KEY, _conditional_linear_score, x, y))
    )(xs, labels)
    assert values.shape == (3,) and bool(jnp.all(jnp.isfinite(values)))


def test_valid_inputs_are_still_taken():
    """The checks refuse nothing that worked: list examples, numpy integer labels, a numpy
    null label, a scalar weight given as a Python number, a float64 score."""
    assert np.isfinite(LOSSES["vp_epsilon"](_KEY, _linear_score, [1.0, 2.0]))
    assert np.isfinite(
        LOSSES["vp_epsilon"](
            _KEY,
            _conditional_linear_score,
            _X2,
            np.int64(2),
            label_dropout=0.5,
            null_label=np.int32(4),
        )
    )
    assert np.isfinite(dsm_loss(_KEY, _linear_score, _X2, sigma=0.5, weighting_fn=lambda s: 2))
    value = dsm_loss(_KEY, lambda x, s: np.asarray(-x, np.float64), _X2, sigma=0.5)
    np.testing.assert_allclose(value, dsm_loss(_KEY, _linear_score, _X2, sigma=0.5), rtol=1e-6)
    assert np.isfinite(hyvarinen_loss(_KEY, _linear_score, jnp.ones(())))


def _affine_score(x, sigma, y=0):
    """A score that depends on the point, the level and the label, so a wrong one shows."""
    return -(1.0 + y) * x / (1.0 + sigma**2) + 0.1 * y


def test_ncsn_loss_is_the_mean_over_its_documented_draws():
    """The docstring's formula on its own key split, n_sigmas = 4 levels: the mean (a sum gave
    4x and passed) of sigma_k^2 |s(x_0 + sigma_k eps_k, sigma_k) + eps_k / sigma_k|^2."""
    from scorelab.noise import sample_ve_noise

    x_0, key = jnp.linspace(-1.0, 1.0, 6), jax.random.key(7)
    got = ncsn_loss(key, _affine_score, x_0, n_sigmas=4)
    key_sigma, key_eps = jax.random.split(key)
    sigmas = sample_training_sigmas(key_sigma, (4,))
    terms = []
    for key_k, sigma in zip(jax.random.split(key_eps, 4), sigmas, strict=True):
        x_sigma, eps = sample_ve_noise(key_k, x_0, sigma)
        terms.append(sigma**2 * jnp.sum((_affine_score(x_sigma, sigma) + eps / sigma) ** 2))
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)


def test_vp_epsilon_loss_is_ddpm_epsilon_mse_on_its_documented_draws():
    """DDPM's objective mean((eps_hat - eps)^2), eps_hat = -sigma_t s(x_t, sigma_t, y), on the
    documented key splits: the label dropped to the null label with probability p (a swap kept
    the label p of the time), t uniform on all T timesteps (the last included), the mean over
    the example's values and the sigma_t^2 weight (dropping either passed)."""
    from scorelab.noise import sample_ve_noise, vp_alpha_sigma, vp_alphas_cumprod
    from scorelab.samplers import ve_sigmas_from_vp

    T, p = 2, 0.25
    sigmas = ve_sigmas_from_vp(*vp_alpha_sigma(vp_alphas_cumprod("linear", T, 1e-4, 0.02)))
    x_0 = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    steps, dropped = set(), 0
    for i in range(16):
        key = jax.random.key(i)
        got = vp_epsilon_loss(
            key, _affine_score, x_0, 3, num_train_timesteps=T, label_dropout=p, null_label=0
        )
        key_rest, key_drop = jax.random.split(key)
        y = 0 if jax.random.bernoulli(key_drop, p) else 3
        key_t, key_eps = jax.random.split(key_rest)
        t = int(jax.random.randint(key_t, (), 0, T))
        x_t, eps = sample_ve_noise(key_eps, x_0, sigmas[t])
        eps_hat = -sigmas[t] * _affine_score(x_t, sigmas[t], y)
        np.testing.assert_allclose(got, jnp.mean((eps_hat - eps) ** 2), rtol=1e-5)
        steps.add(t)
        dropped += y == 0
    assert steps == {0, 1} and 0 < dropped < 16  # both levels and both labels were drawn


def test_ncsn_loss_draws_one_noise_level_per_example_by_default():
    """The documented default ``n_sigmas = 1``: the default loss is the one-draw loss on the
    same key (a default of 2 passed every loss test)."""
    score = lambda x, s: -x / (1.0 + s**2) + 0.1  # noqa: E731
    x_0, key = jnp.linspace(-1.0, 1.0, 6), jax.random.key(7)
    np.testing.assert_allclose(
        ncsn_loss(key, score, x_0), ncsn_loss(key, score, x_0, n_sigmas=1), rtol=1e-6
    )


def test_vp_epsilon_loss_refuses_a_negative_python_int_label():
    """The docstring's "integer class >= 0" held for arrays; a plain -1 was accepted."""
    with pytest.raises(ValueError, match="expected an integer class >= 0"):
        vp_epsilon_loss(jax.random.key(0), lambda x, s, y=0: -x, jnp.zeros(2), class_label=-1)

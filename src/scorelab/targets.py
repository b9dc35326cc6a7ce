r"""Exact oracles: Gaussian mixtures whose noised scores are known in closed form.

A Gaussian mixture :math:`q_0 = \sum_k w_k \mathcal{N}(\mu_k, C_k)` stays a Gaussian mixture
under the perturbation kernel :math:`q(x_t \mid x_0) = \mathcal{N}(\alpha_t x_0, \sigma_t^2 I)`:

.. math::
    q_t = \sum_k w_k \mathcal{N}(\alpha_t \mu_k, \alpha_t^2 C_k + \sigma_t^2 I),

so its score :math:`\nabla \log q_t` is known exactly at every noise level. This is the
*oracle* every sampler and every learned model is measured against.

References:
    Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. https://arxiv.org/abs/1907.05600
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array

from scorelab._keys import typed_key
from scorelab._validate import check_int, check_memory, check_real, check_sigma, is_traced

# Every contraction of the oracle at full float32. XLA's default precision lets a GPU round
# float32 matmul operands to TF32 (10-bit mantissa): at the tutorial's modes (+-10, variance
# 0.1) that moves the whitened distance by ~0.3 and the responsibilities with it, and on an
# H200 a 50-step DDIM with this score then ended up to 7 units (a whole mode) away from the
# same float32 computation in torch. The contractions are tiny (K x d x d), so this is free.
_EXACT = jax.lax.Precision.HIGHEST

__all__ = ["GaussianMixture", "seed_mixture", "gaussian"]

_SYMMETRY_TOLERANCE = 1e-6
"""The largest ``|C - C^T|`` a covariance may have, relative to its largest entry: the
eigendecomposition reads only the lower triangle, so an asymmetric ``C`` was scored as another
matrix than the one :meth:`GaussianMixture.covariance` and the mixture report used."""


def _check_real_dtype(name: str, value) -> None:
    """Raise for complex values (``jnp.asarray(..., float)`` drops the imaginary part with
    only a warning)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        dtype = np.asarray(value).dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(
            f"{name}: complex values (dtype {dtype}); a Gaussian mixture's parameters are real"
        )


def _check_finite(name: str, array) -> None:
    """Raise, naming the first component, unless the ``(K, ...)`` ``array`` is finite (a traced
    array is not checked)."""
    if is_traced(array):
        return
    finite = np.isfinite(np.asarray(array)).reshape(len(array), -1).all(axis=1)
    if not finite.all():
        component = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name}: NaN or inf in component {component}; expected finite numbers")


def _check_weights(weights) -> None:
    """Raise unless the weights are finite, ``>= 0`` and of a positive, finite sum."""
    if is_traced(weights):
        return
    values = np.asarray(weights)
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if bad.size:
        raise ValueError(
            f"weights: expected finite numbers >= 0, got {float(values[bad[0]])} for component "
            f"{bad[0]}"
        )
    # In the stored float, as they are normalised: a subnormal weight passed NumPy's sum > 0,
    # then XLA flushed it to 0 and the normalisation was 0/0 = NaN.
    tiny = np.finfo(values.dtype).tiny
    small = np.flatnonzero((values > 0) & (values < tiny))
    if small.size:
        raise ValueError(
            f"weights: {float(values[small[0]]):.3g} for component {small[0]} is below "
            f"{values.dtype}'s smallest normal number ({tiny:.2g}), which is computed as 0; "
            "give 0, or rescale the weights (only their ratios matter)"
        )
    total = np.sum(values)
    if not total > 0:
        raise ValueError("weights: all zero; at least one component needs a positive weight")
    if not np.isfinite(total):
        raise ValueError(f"weights: their sum overflows {values.dtype}; rescale them")


def _check_symmetric(name: str, covariances) -> None:
    """Raise unless every ``(d, d)`` matrix of ``covariances`` is finite and symmetric to a
    relative :data:`_SYMMETRY_TOLERANCE` (a traced array is not checked)."""
    if is_traced(covariances):
        return
    _check_finite(name, covariances)
    values = np.asarray(covariances, np.float64)
    asymmetry = np.max(np.abs(values - np.swapaxes(values, -1, -2)), axis=(-2, -1))
    scale = np.max(np.abs(values), axis=(-2, -1))
    bad = np.flatnonzero(asymmetry > _SYMMETRY_TOLERANCE * scale)
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"{name}: component {k} is not symmetric (|C - C^T| up to {asymmetry[k]:.3g}, "
            f"largest entry {scale[k]:.3g}); a covariance is symmetric: give (C + C.T) / 2 if "
            "that is what was meant"
        )


def _check_scalar(name: str, value) -> float | None:
    """Raise unless ``value`` is a real scalar (a static check: it holds under ``jit``); return
    its value as a Python float where it is concrete, ``None`` for a tracer."""
    _check_real_dtype(name, value)
    if np.ndim(value) != 0:
        raise ValueError(f"{name}: expected a scalar, got shape {np.shape(value)}")
    if is_traced(value):
        return None
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == jnp.bfloat16):
        raise ValueError(f"{name}: expected a real number, got {value!r}")
    return float(array)


class GaussianMixture(eqx.Module):
    r"""A finite Gaussian mixture :math:`\sum_k w_k \mathcal{N}(\mu_k, C_k)` on
    :math:`\mathbb{R}^d`.

    Sampling and :attr:`distribution` are ``numpyro.distributions.MixtureSameFamily``; the
    densities and the score are evaluated from each covariance's eigendecomposition
    :math:`C_k = U_k \operatorname{diag}(\lambda_k) U_k^\top`, taken once at construction
    (NumPy, outside any trace). A noised marginal keeps :math:`U_k` and shifts the eigenvalues
    to :math:`\alpha^2 \lambda_k + \sigma^2`, so scores at any noise level need no matrix
    factorisation inside ``jit``. This is deliberate: jaxlib 0.10's CPU LAPACK batch kernels can
    deadlock when one compiled graph runs two batched factorisations concurrently, which is
    what ``jax.grad`` of numpyro's log-density in a sampler or loss produced.

    Attributes:
        means: ``(K, d)`` component means :math:`\mu_k`.
        covariances: ``(K, d, d)`` component covariances :math:`C_k`.
        weights: ``(K,)`` mixture weights, normalised to sum to one at construction.
        eigenvalues: ``(K, d)`` eigenvalues :math:`\lambda_k` of the covariances.
        eigenvectors: ``(K, d, d)`` orthonormal eigenvectors :math:`U_k` (columns).
    """

    means: Array
    covariances: Array
    weights: Array
    eigenvalues: Array
    eigenvectors: Array

    def __init__(self, means, covariances, weights):
        """Build the mixture from ``(K, d)`` means, ``(K, d, d)`` covariances and ``(K,)``
        weights (normalised here; any positive scale).

        Values are checked where they are concrete; a mixture built inside a trace (from traced
        parameters) gets the shape checks only.

        Raises:
            ValueError: naming ``means``, ``covariances`` or ``weights``: complex values, wrong
                shapes, no component (``K = 0``) or no dimension (``d = 0``), means or
                covariances that are not finite, covariances that are not symmetric (to a
                relative ``1e-6``) positive definite, weights that are negative, not finite or
                all zero.
        """
        for name, value in (("means", means), ("covariances", covariances), ("weights", weights)):
            _check_real_dtype(name, value)
        # JAX's default float: float32, or float64 under `jax_enable_x64` (the oracle is then
        # exact to float64, not to the float32 of its parameters).
        means = jnp.asarray(means, dtype=float)
        covariances = jnp.asarray(covariances, dtype=float)
        weights = jnp.asarray(weights, dtype=float)
        if means.ndim != 2 or 0 in means.shape:
            raise ValueError(
                f"means: expected shape (K, d) with K >= 1 components and d >= 1, got {means.shape}"
            )
        n_components, dim = means.shape
        if covariances.shape != (n_components, dim, dim):
            raise ValueError(
                f"covariances: expected shape (K, d, d) = {(n_components, dim, dim)}, got "
                f"{covariances.shape}"
            )
        if weights.shape != (n_components,):
            raise ValueError(
                f"weights: expected shape (K,) = ({n_components},), got {weights.shape}"
            )
        _check_finite("means", means)
        _check_weights(weights)
        _check_symmetric("covariances", covariances)
        self.means = means
        self.covariances = covariances
        if is_traced(covariances):  # built inside a trace: factorise there
            eigenvalues, eigenvectors = jnp.linalg.eigh(covariances)
        else:
            eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(covariances, np.float64))
        if not is_traced(eigenvalues) and not np.all(eigenvalues > 0):
            component = int(np.flatnonzero(~np.all(eigenvalues > 0, axis=-1))[0])
            raise ValueError(
                "covariances: expected symmetric positive-definite matrices; component "
                f"{component} has eigenvalue {float(np.min(eigenvalues[component])):.3g}"
            )
        self.eigenvalues = jnp.asarray(eigenvalues, dtype=float)
        self.eigenvectors = jnp.asarray(eigenvectors, dtype=float)
        # Normalised here: numpyro's Categorical rejects unnormalised probabilities, which is
        # why the tutorial's `Categorical(uniform(key(42), (9,)))` raises on current numpyro.
        # XLA divides by multiplying with 1 / sum, which float32 flushes to 0 above ~8.5e37
        # (weights of 1e38 were normalised to 0): large weights are scaled down first.
        weights = jnp.where(jnp.sum(weights) > 1e30, weights * 1e-30, weights)
        self.weights = weights / jnp.sum(weights)

    @property
    def dim(self) -> int:
        """The dimension ``d`` of the space."""
        return self.means.shape[-1]

    @property
    def n_components(self) -> int:
        """The number of components ``K``."""
        return self.means.shape[0]

    @property
    def distribution(self) -> dist.MixtureSameFamily:
        """The numpyro distribution of this mixture."""
        return dist.MixtureSameFamily(
            mixing_distribution=dist.Categorical(probs=self.weights),
            component_distribution=dist.MultivariateNormal(
                self.means, covariance_matrix=self.covariances
            ),
        )

    def sample(self, key: Array, n: int) -> Array:
        """Draw ``n`` samples, shape ``(n, d)``.

        Sample ``i`` depends only on ``fold_in(key, i)``, so the first ``m`` of ``n`` samples
        are the ``m`` samples of a call with ``n = m``.

        Raises:
            ValueError: ``n`` is not an integer ``>= 0`` (``2.5`` drew 3 samples, ``-3`` none),
                or its draws (every component's, as numpyro draws them) need more memory
                than is available.
            TypeError: ``key`` is not a PRNG key.
        """
        check_int("n", n, 0)
        key = typed_key(key)
        per_sample = (self.n_components + 1) * self.dim * self.means.dtype.itemsize + 8
        check_memory("n", float(n) * per_sample, "draw fewer samples (or in batches)")
        return self._sample(key, int(n))

    @eqx.filter_jit
    def _sample(self, key: Array, n: int) -> Array:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
        return jax.vmap(lambda k: self.distribution.sample(k))(keys)

    def log_prob(self, x: Array) -> Array:
        """Log-density at ``x`` of shape ``(..., d)``; returns shape ``(...)``.

        Raises:
            ValueError: ``x`` is not of shape ``(..., d)`` (a static check: it holds under
                ``jit``).
        """
        return jax.nn.logsumexp(jnp.log(self.weights) + self.component_log_probs(x), axis=-1)

    def _check_points(self, x, one: bool) -> Array:
        """``x`` as an array (a list converted) after checking it holds real numbers of shape
        ``(d,)`` (``one``) or ``(..., d)``: a point of another dimension broadcast against the
        means and gave a result of the wrong shape, a complex one complex results. Shapes and
        dtypes are static, so this holds under ``jit``.

        Raises:
            TypeError: complex or non-numeric ``x``.
            ValueError: the wrong shape.
        """
        dtype = getattr(x, "dtype", None)
        if dtype is None:
            dtype = np.asarray(x).dtype
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(f"x: expected real numbers, got dtype {dtype}")
        x = jnp.asarray(x)
        shape, d = x.shape, self.dim
        if one and shape != (d,):
            batch = len(shape) > 1 and shape[-1] == d
            hint = "; use jax.vmap for a batch of points" if batch else ""
            raise ValueError(f"x: expected one point of shape ({d},), got {shape}{hint}")
        if not one and (len(shape) < 1 or shape[-1] != d):
            raise ValueError(f"x: expected points of shape (..., {d}), got {shape}")
        return x

    def _whitened(self, x: Array) -> Array:
        """:math:`U_k^\\top (x - \\mu_k) / \\sqrt{\\lambda_k}`, shape ``(..., K, d)``."""
        centred = x[..., None, :] - self.means
        rotated = jnp.einsum("kij,...ki->...kj", self.eigenvectors, centred, precision=_EXACT)
        return rotated / jnp.sqrt(self.eigenvalues)

    def score(self, x: Array) -> Array:
        r"""The score :math:`\nabla_x \log q(x)` at one point ``x`` of shape ``(d,)``.

        .. math::
            \nabla \log q(x) = \sum_k p(k \mid x)\, C_k^{-1} (\mu_k - x),
            \qquad C_k^{-1} = U_k \operatorname{diag}(1/\lambda_k) U_k^\top.

        Closed form rather than ``jax.grad(log_prob)`` through numpyro: faster in a sampler's
        scan (``benchmarks/exact_score.py``; docs: benchmarks, "The exact score: closed form
        against autodiff"), and free of factorisations (see the class docstring). The tests
        check it against finite differences of an independent SciPy density.

        Raises:
            ValueError: ``x`` is not one point of shape ``(d,)`` (a batch needs ``jax.vmap``).
        """
        # The score of the one-pass pair (XLA drops the unused log-density): one whitening and
        # one set of exponentials serve the responsibilities and the score.
        return self.log_prob_and_score(x)[1]

    def log_prob_and_score(self, x: Array) -> tuple[Array, Array]:
        r"""The log-density and the score at one point ``x`` of shape ``(d,)``, in one pass.

        .. math::
            \ell_k = \log w_k + \log \mathcal{N}(x; \mu_k, C_k), \qquad
            \log q(x) = \log \sum_k e^{\ell_k}, \qquad
            \nabla \log q(x) = \sum_k e^{\ell_k - \log q(x)}\, C_k^{-1} (\mu_k - x).

        :meth:`log_prob` and :meth:`score` each whiten ``x`` against every component and
        exponentiate the component log-densities; this does both once and reads the
        responsibilities :math:`p(k \mid x) = e^{\ell_k - \log q(x)}` off the same
        exponentials, for a sampler that needs both at every step (:func:`scorelab.samplers.mala`
        with ``returns_score=True``). It equals ``(log_prob(x), score(x))`` up to float32
        rounding.

        Args:
            x: one point, shape ``(d,)``.

        Returns:
            ``(log_prob, score)``: :math:`\log q(x)`, a scalar, and :math:`\nabla \log q(x)`,
            shape ``(d,)``.

        Raises:
            ValueError: ``x`` is not one point of shape ``(d,)`` (a batch needs ``jax.vmap``).
        """
        x = self._check_points(x, one=True)
        whitened = self._whitened(x)  # (K, d)
        logits = jnp.log(self.weights) + self._log_normal(whitened)  # (K,)
        # logsumexp and softmax from one set of exponentials (jax.nn's guard for -inf peaks).
        peak = jax.lax.stop_gradient(jnp.max(logits))
        peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
        unnormalised = jnp.exp(logits - peak)
        total = jnp.sum(unnormalised)
        return peak + jnp.log(total), self._score(whitened, unnormalised / total)

    def _score(self, whitened: Array, posterior: Array) -> Array:
        r""":math:`\sum_k p(k \mid x) C_k^{-1} (\mu_k - x)` from ``(K, d)`` and ``(K,)``."""
        precision_times_centred = jnp.einsum(
            "kij,kj->ki", self.eigenvectors, whitened / jnp.sqrt(self.eigenvalues), precision=_EXACT
        )  # C_k^{-1} (x - mu_k)
        return -jnp.einsum("k,ki->i", posterior, precision_times_centred, precision=_EXACT)

    def component_log_probs(self, x: Array) -> Array:
        """Per-component log-densities :math:`log N(x; mu_k, C_k)`; ``(..., d) -> (..., K)``.

        Raises:
            ValueError: ``x`` is not of shape ``(..., d)``.
        """
        x = self._check_points(x, one=False)
        return self._log_normal(self._whitened(x))

    def _log_normal(self, whitened: Array) -> Array:
        r""":math:`\log \mathcal{N}(x; \mu_k, C_k)` from :meth:`_whitened`; ``(..., K)``."""
        quadratic = jnp.sum(whitened**2, axis=-1)
        log_det = jnp.sum(jnp.log(self.eigenvalues), axis=-1)
        return -0.5 * (quadratic + log_det + self.dim * jnp.log(2 * jnp.pi))

    def responsibilities(self, x: Array) -> Array:
        r"""Posterior component probabilities :math:`p(k \mid x)`; ``(..., d) -> (..., K)``.

        Raises:
            ValueError: ``x`` is not of shape ``(..., d)``.
        """
        return jax.nn.softmax(jnp.log(self.weights) + self.component_log_probs(x), axis=-1)

    def marginal(self, alpha_t, sigma_t) -> GaussianMixture:
        r"""The law of :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`.

        .. math::
            q_t = \sum_k w_k \mathcal{N}(\alpha_t \mu_k, \alpha_t^2 C_k + \sigma_t^2 I).

        Args:
            alpha_t: scalar signal scale.
            sigma_t: scalar noise standard deviation.

        Raises:
            ValueError: ``alpha_t`` or ``sigma_t`` is not a real scalar (an array scaled each
                coordinate by its own level); where they are concrete, ``alpha_t`` is not
                finite, ``sigma_t`` is not a finite number ``>= 0`` within float32's range of
                noise levels, or together they give covariances that are not positive
                definite in the stored float (``alpha_t = sigma_t = 0``: a NaN log-density).
        """
        alpha = _check_scalar("alpha_t", alpha_t)
        sigma = _check_scalar("sigma_t", sigma_t)
        if alpha is not None:
            check_real("alpha_t", alpha, "a real number", lambda v: True)
        if sigma is not None:
            check_real("sigma_t", sigma, "a number >= 0", lambda v: v >= 0)
            check_sigma("sigma_t", sigma)
        if None not in (alpha, sigma) and not is_traced(self.eigenvalues):
            self._check_shifted(alpha, sigma)
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        # Same eigenvectors, shifted eigenvalues: no factorisation (see the class docstring).
        return eqx.tree_at(
            lambda m: (m.means, m.covariances, m.eigenvalues),
            self,
            (
                alpha_t * self.means,
                alpha_t**2 * self.covariances + sigma_t**2 * eye,
                alpha_t**2 * self.eigenvalues + sigma_t**2,
            ),
        )

    def _check_shifted(self, alpha: float, sigma: float) -> None:
        r"""Raise unless the eigenvalues :math:`\alpha^2 \lambda + \sigma^2` are normal,
        finite numbers of the stored float (computed in float64 here)."""
        eigenvalues = np.asarray(self.eigenvalues)
        info = np.finfo(eigenvalues.dtype)
        shifted = alpha**2 * eigenvalues.astype(np.float64) + sigma**2
        if np.min(shifted) < info.tiny:
            raise ValueError(
                f"alpha_t, sigma_t: ({alpha!r}, {sigma!r}) give a degenerate covariance "
                f"(smallest eigenvalue {np.min(shifted):.3g}, below {eigenvalues.dtype}'s "
                "smallest normal number); give sigma_t > 0 or a larger alpha_t"
            )
        if np.max(shifted) > info.max:
            raise ValueError(
                f"alpha_t, sigma_t: ({alpha!r}, {sigma!r}) give covariances beyond "
                f"{eigenvalues.dtype}'s range (largest eigenvalue {np.max(shifted):.3g}); "
                "give a smaller alpha_t"
            )

    def ve_marginal(self, sigma) -> GaussianMixture:
        r"""Variance-exploding marginal: :math:`x_\sigma = x_0 + \sigma \varepsilon`.

        Raises:
            ValueError: ``sigma`` is not a real scalar, or, where it is concrete, not a finite
                number ``>= 0`` within float32's range of noise levels (``1e30`` and NaN gave
                NaN scores).
        """
        value = _check_scalar("sigma", sigma)
        if value is not None:
            check_real("sigma", value, "a number >= 0", lambda v: v >= 0)
            check_sigma("sigma", value)
        return self.marginal(1.0, sigma)

    def vp_marginal(self, alpha_bar) -> GaussianMixture:
        r"""Variance-preserving marginal:
        :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \varepsilon`
        (Ho et al., 2020, eq. 4).

        Raises:
            ValueError: ``alpha_bar`` is not a real scalar, or, where it is concrete, not a
                number in ``[0, 1]`` (``2.0`` gave NaN scores).
        """
        value = _check_scalar("alpha_bar", alpha_bar)
        if value is not None:
            check_real("alpha_bar", value, "a number in [0, 1]", lambda v: 0 <= v <= 1)
        return self.marginal(jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar))

    def ve_score(self, x: Array, sigma) -> Array:
        r"""Exact VE-noised score :math:`\nabla \log q_\sigma(x)` at one point ``x`` ``(d,)``.

        Raises:
            ValueError: ``x`` is not one point of shape ``(d,)`` (a batch needs ``jax.vmap``),
                or ``sigma`` is not a real scalar (or, concrete, not a valid noise level, as
                :meth:`ve_marginal`).
            TypeError: ``x`` is complex or not numeric.
        """
        return self.ve_marginal(sigma).score(x)

    def mean(self) -> Array:
        """The mixture mean, shape ``(d,)``."""
        return jnp.matmul(self.weights, self.means, precision=_EXACT)

    def covariance(self) -> Array:
        """The mixture covariance, shape ``(d, d)`` (law of total covariance)."""
        centred = self.means - self.mean()
        within = jnp.einsum("k,kij->ij", self.weights, self.covariances, precision=_EXACT)
        between = jnp.einsum("k,ki,kj->ij", self.weights, centred, centred, precision=_EXACT)
        return within + between


def seed_mixture() -> GaussianMixture:
    r"""The founding tutorial's target: nine isotropic Gaussians on :math:`\{-10, 0, 10\}^2`.

    Means are built exactly as the tutorial builds them (``meshgrid(arange(-10, 15, 10), ...)``
    flattened), covariance :math:`0.1\,I`, and weights ``uniform(key(42), (9,))`` — the
    tutorial's numbers — normalised.
    """
    grid = jnp.meshgrid(jnp.arange(-10.0, 15.0, 10), jnp.arange(-10.0, 15.0, 10))
    means = jnp.stack([m.flatten() for m in grid], axis=1)
    covariances = jnp.repeat(jnp.eye(2)[None] * 0.1, repeats=means.shape[0], axis=0)
    # The tutorial's float32 draw, also under x64 (a float64 draw would be other numbers).
    weights = jax.random.uniform(jax.random.key(42), (means.shape[0],), dtype=jnp.float32)
    return GaussianMixture(means, covariances, weights)


def gaussian(mean, covariance) -> GaussianMixture:
    r"""A single Gaussian :math:`\mathcal{N}(\mu, C)` as a one-component mixture.

    Its noised score is :math:`\nabla \log q_\sigma(x) = -(C + \sigma^2 I)^{-1} (x - \mu)`,
    the simplest closed-form oracle.

    Args:
        mean: ``(d,)`` mean :math:`\mu`.
        covariance: ``(d, d)`` symmetric positive-definite covariance :math:`C`.

    Raises:
        ValueError: naming ``mean`` or ``covariance``: complex values, wrong shapes, values
            that are not finite or a covariance that is not symmetric; one that is not
            positive definite as :class:`GaussianMixture` does (naming ``covariances``).
    """
    _check_real_dtype("mean", mean)
    _check_real_dtype("covariance", covariance)
    mean = jnp.asarray(mean, dtype=float)
    covariance = jnp.asarray(covariance, dtype=float)
    if mean.ndim != 1 or mean.shape[0] < 1:
        raise ValueError(f"mean: expected shape (d,) with d >= 1, got {mean.shape}")
    if covariance.shape != (mean.shape[0],) * 2:
        raise ValueError(
            f"covariance: expected shape (d, d) = {(mean.shape[0],) * 2}, got {covariance.shape}"
        )
    _check_finite("mean", mean[None])
    _check_symmetric("covariance", covariance[None])
    return GaussianMixture(mean[None], covariance[None], jnp.ones((1,)))


# --- a 64-dimensional oracle: a Gaussian mixture fitted to scikit-learn's digits ------------------

DIGITS_IMAGE_SHAPE = (1, 8, 8)
"""Image shape ``(C, H, W)`` of :func:`digits_mixture`'s points: a flat 64-vector reshapes to it
row by row (``x.reshape(1, 8, 8)``), as ``load_digits().images`` flattens to ``.data``."""

DIGITS_BIN_WIDTH = 1.0 / 8.0
"""Spacing of the 17 pixel levels of the digits in [-1, 1] (``pixel / 8 - 1``), the
dequantisation bin for :func:`scorelab.likelihood.bits_per_dim`."""


def digits_mixture() -> GaussianMixture:
    r"""A 10-component Gaussian mixture in 64 dimensions fitted to scikit-learn's digits.

    The data are the 1797 8x8 images of ``sklearn.datasets.load_digits`` (pixels
    :math:`k \in \{0, \dots, 16\}`), scaled to :math:`x = k/8 - 1 \in [-1, 1]^{64}`; a point
    reshapes to :data:`DIGITS_IMAGE_SHAPE`. One component per class :math:`c`:

    .. math::
        w_c = n_c / n, \qquad \mu_c = \frac{1}{n_c} \sum_{i \in c} x_i, \qquad
        C_c = (1 - \rho_c)\, S_c + \rho_c\, \frac{\operatorname{tr} S_c}{64} I,

    with :math:`S_c` the class's maximum-likelihood covariance and :math:`\rho_c` the
    Ledoit-Wolf shrinkage intensity (``sklearn.covariance.ledoit_wolf``). :math:`S_c` itself
    is singular (pixels that are constant within a class, and :math:`n_c \approx 180` points
    in 64 dimensions); the shrinkage, :math:`\rho_c` between 0.029 and 0.080, lifts its
    smallest eigenvalue to 0.0067-0.014 (a standard deviation of at least 0.08, two thirds of
    the pixel step 1/8) and leaves condition numbers between 150 and 810, well within float32
    (``tests/test_targets.py`` checks these bounds).

    This is scorelab's exact oracle beyond two dimensions: its noised score, log-density and
    samples are exact (:class:`GaussianMixture`), so likelihoods, samplers and learned models
    on image-shaped data can be measured against the truth.

    Returns:
        A :class:`GaussianMixture` with ``means`` ``(10, 64)``, ``covariances``
        ``(10, 64, 64)`` and ``weights`` ``(10,)``, in class order 0-9.

    References:
        Ledoit, O. & Wolf, M. (2004). A well-conditioned estimator for large-dimensional
        covariance matrices. J. Multivariate Anal. 88(2).
        https://doi.org/10.1016/S0047-259X(03)00096-4
        Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits (UCI).
        https://doi.org/10.24432/C50P49
    """
    # scikit-learn is imported here only: it is slow to import and nothing else needs it.
    from sklearn.covariance import ledoit_wolf
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data / 8.0 - 1.0
    classes = np.unique(digits.target)
    members = [x[digits.target == c] for c in classes]
    means = np.stack([m.mean(axis=0) for m in members])
    covariances = np.stack([ledoit_wolf(m)[0] for m in members])
    weights = np.array([m.shape[0] for m in members], np.float64) / x.shape[0]
    return GaussianMixture(means, covariances, weights)


__all__ += ["DIGITS_IMAGE_SHAPE", "DIGITS_BIN_WIDTH", "digits_mixture"]

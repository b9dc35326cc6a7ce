"""The relative score error per noise level: its closed form on a Gaussian, its standard error,
the CLI report, and the one-line refusals."""

import inspect
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.cli import main
from scorelab.config import ConfigError, ExperimentConfig
from scorelab.models import MLP, ExactScore, NoiseConditionalMLP
from scorelab.score_error import score_error_profile
from scorelab.targets import gaussian
from scorelab.workflows import score_error_run

VARIANCE = 0.3
DELTA = jnp.array([0.2, -0.1])
SIGMAS = np.array([0.02, 0.5, 3.0])


@pytest.fixture(scope="module")
def target():
    return gaussian(jnp.array([1.0, -2.0]), VARIANCE * jnp.eye(2))


def offset_score(target):
    """The exact noised score plus a constant vector DELTA."""
    exact = ExactScore(target)
    return lambda x, sigma: exact(x, sigma) + DELTA


def closed_form(sigma):
    # E|DELTA|^2 / E|grad log q_sigma|^2, and E|grad log q_sigma|^2 = d / (v + sigma^2) for
    # q_sigma = N(mu, (v + sigma^2) I) in d = 2 dimensions.
    return float(jnp.sum(DELTA**2)) * (VARIANCE + sigma**2) / 2


def test_offset_score_has_its_closed_form_within_standard_errors(target, key):
    profile = score_error_profile(key, offset_score(target), target, SIGMAS, n=4000)
    assert profile.n == 4000 and np.all(profile.standard_error > 0)
    want = np.array([closed_form(s) for s in SIGMAS])
    assert np.all(np.abs(profile.relative_error - want) < 4 * profile.standard_error)


def test_standard_error_is_the_spread_over_seeds(target):
    # 64 independent profiles of n = 200: the spread of the estimate matches the mean reported
    # standard error (the sd of a sample sd of 64 is about 9% of it: 4 of those are 36%).
    sigma, score_fn = [0.5], offset_score(target)
    estimates, errors = [], []
    for seed in range(64):
        profile = score_error_profile(jax.random.key(seed), score_fn, target, sigma, 200)
        estimates.append(profile.relative_error[0])
        errors.append(profile.standard_error[0])
    assert abs(np.std(estimates, ddof=1) / np.mean(errors) - 1) < 0.36


def test_each_level_is_its_formula_on_its_own_draws(target, key):
    """Level i's estimate and standard error are the docstring's formulas, transcribed in
    float64 NumPy on the samples of fold_in(key, i) (an sd of ddof 1: at n = 3 ddof 0 is 18%
    smaller); two equal levels draw different samples, so their estimates differ; n defaults
    to the documented 2000."""
    score_fn, n = offset_score(target), 3
    profile = score_error_profile(key, score_fn, target, [0.5, 0.5], n=n)
    assert profile.relative_error[0] != profile.relative_error[1]
    noised = target.ve_marginal(0.5)
    for i in range(2):
        x = noised.sample(jax.random.fold_in(key, i), n)
        exact = np.asarray(jax.vmap(noised.score)(x), np.float64)
        model = np.asarray(jax.vmap(lambda y: score_fn(y, 0.5))(x), np.float64)
        a, b = np.sum((model - exact) ** 2, axis=1), np.sum(exact**2, axis=1)
        ratio = a.sum() / b.sum()
        se = np.std(a - ratio * b, ddof=1) / (np.sqrt(n) * b.mean())
        np.testing.assert_allclose(profile.relative_error[i], ratio, rtol=1e-5)
        np.testing.assert_allclose(profile.standard_error[i], se, rtol=1e-4)
    assert inspect.signature(score_error_profile).parameters["n"].default == 2000


def test_exact_score_has_no_error_and_image_shapes_are_reshaped(target, key):
    profile = score_error_profile(key, ExactScore(target), target, SIGMAS, n=100)
    np.testing.assert_array_equal(profile.relative_error, 0.0)
    exact = ExactScore(target)

    def image_score(x, sigma):  # a score model of (1, 1, 2) "images"
        assert x.shape == (1, 1, 2)
        return exact(x.reshape(-1), sigma).reshape(x.shape) + DELTA.reshape(x.shape)

    shaped = score_error_profile(key, image_score, target, SIGMAS, n=100, shape=(1, 1, 2))
    flat = score_error_profile(key, offset_score(target), target, SIGMAS, n=100)
    np.testing.assert_allclose(shaped.relative_error, flat.relative_error, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigmas": [0.0, 1.0]}, "sigmas: expected a non-empty grid of noise levels > 0"),
        ({"n": 1}, "n: "),
        ({"n": 10**12}, "n: needs .* of memory"),  # checked before allocating (a traceback)
        ({"shape": (3,)}, r"shape: \(3,\) has not the target's 2 entries"),
    ],
)
def test_invalid_arguments_raise(target, key, kwargs, message):
    arguments = {"sigmas": SIGMAS, "n": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        score_error_profile(key, ExactScore(target), target, **arguments)


def _nan_score(x, sigma):
    return x * jnp.nan


@pytest.mark.parametrize(
    "change, error, name",
    [
        ({"sigmas": [np.inf]}, ValueError, "sigmas"),  # was a silent NaN
        ({"sigmas": [1e39]}, ValueError, "sigmas"),  # was an overflow RuntimeWarning
        ({"sigmas": [1e20]}, ValueError, "sigmas"),  # its precision underflows: NaN
        ({"sigmas": [np.nan]}, ValueError, "sigmas"),
        ({"sigmas": [1e-50]}, ValueError, "sigmas"),  # 0 in float32
        ({"sigmas": ["a"]}, TypeError, "sigmas"),
        ({"score_fn": lambda x, sigma: x[:1]}, ValueError, "score_fn"),  # was broadcast
        ({"score_fn": _nan_score}, ValueError, "score_fn"),  # was a silent NaN
        ({"score_fn": None}, TypeError, "score_fn"),
        ({"key": 0}, TypeError, "key"),
        ({"target": None}, TypeError, "target"),
        ({"shape": (-1, -2)}, ValueError, "shape"),  # prod 2 passed, then a reshape error
        ({"shape": 2}, TypeError, "shape"),
    ],
)
def test_hostile_arguments_are_refused_in_one_line_naming_them(target, key, change, error, name):
    """Each was NaN (sigma inf or 1e20, a NaN score), a broadcast score of another shape, an
    overflow warning, or an internal error (a seed, a target that is none, a bad shape)."""
    arguments = {"key": key, "score_fn": ExactScore(target), "target": target,
                 "sigmas": SIGMAS, "n": 16, **change}  # fmt: skip
    with pytest.raises(error, match=f"^{re.escape(name)}: ") as raised:
        score_error_profile(**arguments)
    assert "\n" not in str(raised.value)


def test_a_legacy_key_gives_the_typed_keys_profile(target):
    score_fn = offset_score(target)
    legacy = score_error_profile(jax.random.PRNGKey(3), score_fn, target, SIGMAS, n=50)
    typed = score_error_profile(jax.random.key(3), score_fn, target, SIGMAS, n=50)
    np.testing.assert_array_equal(legacy.relative_error, typed.relative_error)


_TINY = ["--steps", "4", "--batch-size", "32", "--set", "data.n=200", "--quiet"]


@pytest.mark.slow  # about 16 s of a worker: kept out of the default suite's 15 minutes
def test_cli_writes_the_profile_of_an_edm_run_as_json_and_a_figure(tmp_path):
    run = tmp_path / "edm"
    edm = ["--set", "model.preconditioning=edm", "--set", "loss.weighting=edm"]
    assert main(["train", "--loss", "ncsn", "--out", str(run), *edm, *_TINY]) == 0
    out_json, out_png = tmp_path / "profile.json", tmp_path / "profile.png"
    command = ["score-error", "--run", str(run), "--n", "50", "--levels", "5"]
    assert main([*command, "--json", str(out_json), "--plot", str(out_png)]) == 0
    profile = json.loads(out_json.read_text())
    assert len(profile["sigmas"]) == len(profile["relative_error"]) == 5
    assert out_png.stat().st_size > 0
    assert main(["score-error", "--run", str(tmp_path / "missing")]) == 2  # one line, exit 2


def test_runs_without_an_exact_score_or_a_noise_level_are_refused_in_one_line(key):
    on_file = ExperimentConfig.from_dict({"data": {"source": "points.npy"}})
    model = NoiseConditionalMLP(key, widths=(4, 4, 4))
    with pytest.raises(ConfigError, match=r"^data.source: 'points.npy' has no exact score"):
        score_error_run(on_file, model)
    unconditional = ExperimentConfig.from_dict({"loss": {"name": "hyvarinen"}})
    with pytest.raises(ConfigError, match="^model: the run holds an unconditional model"):
        score_error_run(unconditional, MLP(key, widths=(4, 4)))

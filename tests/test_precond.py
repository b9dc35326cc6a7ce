"""EDM preconditioning: Table 1's coefficients, the exact optimum, the loss weighting and law of
the training sigmas, configuration and checkpoints."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from scorelab import builders
from scorelab.checkpoints import load_model, save_model
from scorelab.config import ConfigError, ExperimentConfig
from scorelab.losses import dsm_loss, edm_weighting, ncsn_loss, sample_training_sigmas
from scorelab.models import ConditionalMLP, NoiseConditionalMLP
from scorelab.noise import sample_ve_noise
from scorelab.precond import EDMPreconditioned, edm_coefficients
from scorelab.sweep import load_score_model

SIGMAS = np.array([0.002, 0.02, 0.3, 1.0, 8.0, 80.0])


@pytest.mark.parametrize("sigma_data", [0.5, 8.0])
def test_coefficients_are_table_1s(sigma_data):
    # Karras et al. (2022), Table 1, "Network and preconditioning", in float64 numpy.
    got = edm_coefficients(jnp.asarray(SIGMAS), sigma_data)
    s, sd = SIGMAS, sigma_data
    np.testing.assert_allclose(got.c_skip, sd**2 / (s**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(got.c_out, s * sd / np.sqrt(s**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(got.c_in, 1 / np.sqrt(s**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(got.c_noise, np.log(s) / 4, rtol=1e-6)
    # The design's two unit-variance conditions: the input c_in x_sigma and the effective
    # target (x_0 - c_skip x_sigma) / c_out have unit variance for data of variance sd^2.
    np.testing.assert_allclose(got.c_in**2 * (sd**2 + s**2), 1.0, rtol=1e-5)
    target_var = ((1 - got.c_skip) ** 2 * sd**2 + got.c_skip**2 * s**2) / got.c_out**2
    np.testing.assert_allclose(target_var, 1.0, rtol=1e-5)


class GaussianOptimum(eqx.Module):
    """The raw network that makes EDM's denoiser exact for x_0 ~ N(mu, diag(v)) (v per entry):
    F*(x_in, c_noise) = (D*(x, sigma) - c_skip x) / c_out with x and sigma recovered from the
    network's inputs (sigma = exp(4 c_noise), x = x_in / c_in), and
    D* = mu + v/(v + sigma^2) (x - mu). The numerator is written as
    sigma^2 [mu/(v + s^2) + (v - sd^2) x / ((v + s^2)(s^2 + sd^2))], algebraically equal and
    free of float32's cancellation of O(1) terms at small sigma."""

    mu: jax.Array
    variance: jax.Array
    sigma_data: float

    def __call__(self, x_in, c_noise):
        sigma = jnp.exp(4.0 * c_noise)
        c = edm_coefficients(sigma, self.sigma_data)
        x = x_in / c.c_in
        v, sd2 = self.variance, self.sigma_data**2
        numerator = sigma**2 * (
            self.mu / (v + sigma**2) + (v - sd2) * x / ((v + sigma**2) * (sigma**2 + sd2))
        )
        return numerator / c.c_out


@pytest.mark.parametrize("sigma_data", [0.7, 2.0])  # equal to the data's sd, and not
@pytest.mark.parametrize("shape", [(3,), (1, 4, 4), (3, 4, 2)])
def test_exact_optimum_gives_the_exact_score(sigma_data, shape, key):
    # Images (C, H, W) with a mean and a variance per pixel (0.25 to 0.73): the wrapper works
    # entry by entry, whatever the layout.
    size = int(np.prod(shape))
    mu = jnp.linspace(-1.0, 1.0, size).reshape(shape)
    variance = jnp.linspace(0.25, 0.73, size)[::-1].reshape(shape)
    model = EDMPreconditioned(GaussianOptimum(mu, variance, sigma_data), sigma_data)
    for i, sigma in enumerate(SIGMAS):
        eps = jax.random.normal(jax.random.fold_in(key, i), shape)
        x = mu + jnp.sqrt(variance + sigma**2) * eps
        # closed form for N(mu, diag(v)) * N(0, s^2 I)
        exact_score = -(x - mu) / (variance + sigma**2)
        scale = float(jnp.max(jnp.abs(exact_score)))
        np.testing.assert_allclose(model(x, sigma), exact_score, rtol=0, atol=2e-5 * scale)
        exact_denoised = mu + variance / (variance + sigma**2) * (x - mu)
        np.testing.assert_allclose(model.denoise(x, sigma), exact_denoised, rtol=0, atol=2e-5)


def test_score_is_the_denoisers_tweedie_score_in_float64_form(key):
    # (D - x)/sigma^2 computed in float64 from the raw network's float32 output agrees with the
    # wrapper's cancellation-free float32 form at every sigma, including 0.002 where D - x
    # cancels (there float32's c_skip alone is off by 6e-8 x / sigma^2 = 0.15 in the score).
    sigma_data = 8.0
    network = ConditionalMLP(key, dim=2, widths=(16, 16, 16))
    model = EDMPreconditioned(network, sigma_data)
    x = jnp.array([9.7, -0.3])
    x64 = np.asarray(x, np.float64)
    for sigma in SIGMAS:
        total = sigma**2 + sigma_data**2
        c_skip, c_out = sigma_data**2 / total, sigma * sigma_data / np.sqrt(total)
        c = edm_coefficients(jnp.float32(sigma), sigma_data)  # the network sees float32 inputs
        raw = np.asarray(network(c.c_in * x, c.c_noise), np.float64)
        want = (c_skip * x64 + c_out * raw - x64) / sigma**2
        np.testing.assert_allclose(model(x, sigma), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_checkpoint_round_trip(tmp_path, key):
    network_kwargs = {"dim": 2, "widths": (8, 16, 8), "activation": "silu"}
    model = EDMPreconditioned(ConditionalMLP(key, **network_kwargs), 8.0)
    record = {"class": "scorelab.models:ConditionalMLP", "kwargs": network_kwargs}
    save_model(tmp_path / "edm", model, network=record, sigma_data=8.0)
    loaded = load_model(tmp_path / "edm")
    assert isinstance(loaded, EDMPreconditioned) and loaded.sigma_data == 8.0
    x = jnp.array([1.0, -3.0])
    np.testing.assert_array_equal(loaded(x, 0.5), model(x, 0.5))
    assert isinstance(load_score_model(tmp_path / "edm"), EDMPreconditioned)  # sweep --run
    with pytest.raises(ValueError, match="does not rebuild the model"):
        wrong = {**record, "kwargs": {**network_kwargs, "widths": (8, 8, 8)}}
        save_model(tmp_path / "bad", model, network=wrong, sigma_data=8.0)


def test_noise_conditional_mlp_is_the_conditional_mlp_at_a_quarter_log_sigma(key):
    model = NoiseConditionalMLP(key, widths=(8, 16, 8), scale_by_sigma=False)
    x = jnp.array([0.5, 2.0])
    np.testing.assert_array_equal(model(x, 3.0), model.network(x, 0.25 * jnp.log(3.0)))


def test_edm_weighting_is_lambda_edm_in_score_units(key):
    sigma_data = 8.0
    lambda_edm = (SIGMAS**2 + sigma_data**2) / (SIGMAS * sigma_data) ** 2  # Table 1
    np.testing.assert_allclose(edm_weighting(SIGMAS, sigma_data), lambda_edm * SIGMAS**4, rtol=1e-6)
    # Under the preconditioning, the weighted score loss is the raw network's plain squared
    # error against its effective target (x_0 - c_skip x) / c_out: lambda_EDM c_out^2 = 1.
    model = EDMPreconditioned(ConditionalMLP(key, dim=2, widths=(16, 16, 16)), sigma_data)
    x_0 = jnp.array([10.0, -0.2])
    weighting_fn = Partial(edm_weighting, sigma_data=sigma_data)
    for i, sigma in enumerate(SIGMAS[1:]):
        key_i = jax.random.fold_in(key, i)
        x, _ = sample_ve_noise(key_i, x_0, sigma)
        c = edm_coefficients(sigma, sigma_data)
        raw = model.network(c.c_in * x, c.c_noise)
        want = jnp.sum((raw - (x_0 - c.c_skip * x) / c.c_out) ** 2)
        got = dsm_loss(key_i, model, x_0, sigma=sigma, weighting_fn=weighting_fn)
        # want's own float32 cancellation, |x_0| / sigma times eps: 3e-5 at sigma 0.02 (2e-3
        # hid the loss's own at large sigma, pass 30 #3)
        np.testing.assert_allclose(got, want, rtol=1e-4)


class _Linear(eqx.Module):
    """F(x, c_noise) = W x + b c_noise: a raw network whose float64 value NumPy can repeat."""

    weight: jax.Array
    bias: jax.Array

    def __call__(self, x, c_noise):
        return self.weight @ x + self.bias * c_noise


@pytest.mark.parametrize("sigma", [80.0, 1e3, 1e4, 1e5])
def test_the_edm_score_loss_keeps_float32_precision_at_large_sigma(sigma, key):
    """The residual s + eps / sigma cancels two terms of size 1 / sigma to one of 1 / sigma^2:
    in float32 the loss lost sigma times its precision (4e-3 relative at sigma 1e5, the
    gradient 7e-3; pass 30, #3). Computed as (D - x_0) / sigma^2 it keeps float32's, against
    the same loss in float64 from the same noisy input."""
    sigma_data, x_0 = 0.5, jnp.array([0.3, -0.7, 0.1])
    w = jax.random.normal(key, (3, 3)) * 0.3
    model = EDMPreconditioned(_Linear(w, jnp.array([0.2, -0.1, 0.4])), sigma_data)
    got = dsm_loss(key, model, x_0, sigma=sigma)
    x, _ = sample_ve_noise(key, x_0, sigma)  # the float32 input the loss drew
    x64, s2 = np.asarray(x, np.float64), sigma**2 + sigma_data**2  # Table 1 in float64
    raw = np.asarray(w, np.float64) @ (x64 / np.sqrt(s2)) + np.array([0.2, -0.1, 0.4]) * (
        np.log(sigma) / 4
    )
    denoised = sigma_data**2 / s2 * x64 + sigma * sigma_data / np.sqrt(s2) * raw
    want = np.sum(((denoised - np.asarray(x_0, np.float64)) / sigma**2) ** 2)
    assert abs(float(got) / want - 1) < 1e-5  # float32 rounding of a handful of operations


def test_lognormal_draw_has_edms_moments(key):
    # ln sigma ~ N(P_mean, P_std^2); a range wide enough that clipping is beyond 9 sd.
    n, p_mean, p_std = 20_000, -1.2, 1.2
    sigmas = sample_training_sigmas(
        key, (n,), sigma_min=1e-6, sigma_max=1e5, p_mean=p_mean, p_std=p_std
    )
    log_sigma = np.log(np.asarray(sigmas, np.float64))
    mean_se = p_std / np.sqrt(n)
    assert abs(log_sigma.mean() - p_mean) < 4 * mean_se
    var_se = p_std**2 * np.sqrt(2.0 / (n - 1))  # sd of the sample variance of a normal
    assert abs(log_sigma.var(ddof=1) - p_std**2) < 4 * var_se
    # Defaults unchanged: the tutorial's N(-0.5, 1.2^2), bit for bit.
    default = sample_training_sigmas(key, (100,))
    explicit = sample_training_sigmas(key, (100,), p_mean=-0.5, p_std=1.2)
    np.testing.assert_array_equal(default, explicit)
    with pytest.raises(ValueError, match="p_std"):
        sample_training_sigmas(key, (3,), p_std=0.0)


def test_edm_configuration_builds_the_preconditioned_model_and_loss(key):
    data = 8.0 * np.asarray(jax.random.normal(key, (256, 2)))
    values = {
        "model": {"preconditioning": "edm"},
        "loss": {"weighting": "edm", "sigma_distribution": "lognormal", "p_mean": -1.2},
    }
    config = ExperimentConfig.from_dict(values)
    model, kwargs = builders.make_model(config.model, config.loss, data, key)
    assert isinstance(model, EDMPreconditioned)
    assert model.sigma_data == kwargs["sigma_data"] == pytest.approx(float(np.std(data)))
    loss_fn = builders.make_loss(config.loss, builders.data_scale(data))
    want = ncsn_loss(
        key,
        model,
        data[0],
        sigma_min=config.loss.sigma_min,
        sigma_max=config.loss.sigma_max,
        n_sigmas=2,
        sigma_distribution="lognormal",
        p_mean=-1.2,
        p_std=1.2,
        weighting_fn=Partial(edm_weighting, sigma_data=model.sigma_data),
    )
    np.testing.assert_allclose(loss_fn(key, model, data[0]), want, rtol=1e-6)
    # The defaults are the NCSN loss as before: NCSN weighting, the tutorial's log-normal law.
    default = ExperimentConfig.from_dict({})
    assert default.loss.weighting == "ncsn" and default.model.preconditioning == "none"
    assert (default.loss.p_mean, default.loss.p_std) == (-0.5, 1.2)


def test_noise_embedding_and_widths_are_configured_saved_and_refused_where_unread(tmp_path, key):
    data = 8.0 * np.asarray(jax.random.normal(key, (64, 2)))
    edm = {"preconditioning": "edm", "noise_embedding": "positional", "widths": [8, 24, 16]}
    config = ExperimentConfig.from_dict({"model": edm, "loss": {"weighting": "edm"}})
    builders.check_fields_read(config)
    model, kwargs = builders.make_model(config.model, config.loss, data, key)
    assert model.network.noise_embedding == "positional"
    assert [layer.out_features for layer in model.network.layers] == [8, 24, 16]
    assert kwargs["network"]["kwargs"]["noise_embedding"] == "positional"
    save_model(tmp_path / "edm", model, **kwargs)
    x = jnp.array([1.0, -3.0])
    np.testing.assert_array_equal(load_model(tmp_path / "edm")(x, 0.5), model(x, 0.5))
    plain = ExperimentConfig.from_dict({"model": {"noise_embedding": "positional"}})
    ncsn, _ = builders.make_model(plain.model, plain.loss, data, key)
    assert isinstance(ncsn, NoiseConditionalMLP) and ncsn.network.noise_embedding == "positional"
    dsm = ExperimentConfig.from_dict(
        {"model": {"noise_embedding": "positional"}, "loss": {"name": "dsm"}}
    )
    with pytest.raises(ConfigError, match="model.noise_embedding: .* does not read it"):
        builders.check_fields_read(dsm)
    with pytest.raises(ConfigError, match="model.noise_embedding: unknown value 'fourier'"):
        ExperimentConfig.from_dict({"model": {"noise_embedding": "fourier"}})
    with pytest.raises(ConfigError, match="model.widths: expected three hidden widths"):
        ExperimentConfig.from_dict({"model": {"widths": [8, 16]}})
    with pytest.raises(ConfigError, match="model.widths: expected an integer >= 1"):
        ExperimentConfig.from_dict({"model": {"widths": [8, 0, 8]}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": {"preconditioning": "karras"}}, "model.preconditioning: unknown value"),
        ({"loss": {"weighting": "sigma"}}, "loss.weighting: unknown value 'sigma'"),
        ({"loss": {"p_std": 0.0}}, "loss.p_std: "),
        (
            {"loss": {"name": "dsm"}, "model": {"preconditioning": "edm"}},
            "model.preconditioning: 'edm' wraps a noise-conditional network",
        ),
        (
            {"loss": {"name": "vp_epsilon"}, "model": {"name": "unet", "preconditioning": "edm"}},
            "model.preconditioning: 'edm' makes the network a VE denoiser trained by loss 'ncsn'",
        ),
        (
            {"loss": {"name": "vp_epsilon"}, "model": {"preconditioning": "edm"}},
            "model.preconditioning: 'edm' makes the network a VE denoiser",
        ),
        (
            {"loss": {"name": "ncsn"}, "model": {"name": "unet"}},
            "model.name: 'unet' predicts the noise .* or is a VE denoiser with "
            "model.preconditioning=edm",
        ),
        (
            {"loss": {"name": "dsm"}, "model": {"name": "unet", "preconditioning": "edm"}},
            "model.name: loss 'dsm' trains model 'mlp', got 'unet'",
        ),
    ],
)
def test_invalid_edm_configuration_is_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as error:
        ExperimentConfig.from_dict(values)
    assert "\n" not in str(error.value)


# --- the U-Net as a VE denoiser ------------------------------------------------------------------

_EDM_UNET = {
    "data": {"source": "digits"},
    "model": {"name": "unet", "preconditioning": "edm", "channels": [8, 8]},
    "loss": {"weighting": "edm", "sigma_distribution": "lognormal", "p_mean": -1.2},
}


@pytest.mark.slow  # about 13 s of a worker: kept out of the default suite's 15 minutes
def test_edm_unet_feeds_a_quarter_log_sigma_to_the_unets_timestep(key):
    # The configured model is EDMPreconditioned around the U-Net, whose timestep input is
    # c_noise = ln(sigma)/4 unscaled; its score is Table 1's, computed here in float64 from the
    # U-Net called directly.
    from scorelab.diffusers import UNetNetwork

    config = ExperimentConfig.from_dict(_EDM_UNET)
    data = np.asarray(jax.random.uniform(key, (32, 1, 8, 8), minval=-1.0, maxval=1.0))
    model, kwargs = builders.make_model(config.model, config.loss, data, key)
    assert isinstance(model, EDMPreconditioned) and isinstance(model.network, UNetNetwork)
    sigma_data = float(np.std(data))
    assert model.sigma_data == kwargs["sigma_data"] == pytest.approx(sigma_data)
    x = data[0] + 0.3
    x64 = np.asarray(x, np.float64)
    for sigma in (0.002, 0.5, 80.0):
        total = sigma**2 + sigma_data**2
        c_in = jnp.float32(1 / np.sqrt(total))
        raw = model.network.unet((c_in * x)[None], jnp.float32([np.log(sigma) / 4]))[0]
        c_out = sigma * sigma_data / np.sqrt(total)
        want = c_out / sigma**2 * np.asarray(raw, np.float64) - x64 / total
        scale = np.abs(want).max()
        np.testing.assert_allclose(model(x, sigma), want, rtol=0, atol=2e-5 * scale)


def test_edm_unet_configuration_is_accepted_and_refused_at_the_command_line(tmp_path, capsys):
    from scorelab.cli import main

    config = ExperimentConfig.from_dict(_EDM_UNET)
    assert config.loss.name == "ncsn" and config.model.resolved(config.loss) == "unet"
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    argv = ["train", "--data", "digits", "--steps", "1", "--out", str(tmp_path / "run")]
    argv += ["--set", "model.name=unet", "--set", "model.preconditioning=edm"]
    assert main([*argv, "--set", "loss.name=vp_epsilon"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.preconditioning: 'edm' makes the network" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # three U-Net compilations: ~100 s of CPU, minutes on a loaded machine
def test_edm_unet_trains_samples_resumes_and_refuses_export_on_digits(tmp_path, capsys):
    """Toy size: a U-Net of 8-8 channels, 2 steps of batch 4, then 2 more on resume."""
    from PIL import Image

    from scorelab.cli import main
    from scorelab.runs import load_run

    run = tmp_path / "run"
    train = ["train", "--data", "digits", "--batch-size", "4", "--quiet", "--out", str(run)]
    for section, table in _EDM_UNET.items():
        train += [f"--set={section}.{k}={v!r}".replace("'", '"') for k, v in table.items()]
    train += ["--set", "train.steps_per_dispatch=2", "--set", 'train.schedule="constant"']
    train += ["--set", 'sampler.name="heun"', "--set", 'sampler.grid="karras"']
    train += ["--set", "sampler.n_levels=3"]
    assert main([*train, "--steps", "2"]) == 0
    _, model = load_run(run)
    assert isinstance(model, EDMPreconditioned)
    samples, grid = tmp_path / "s.npy", tmp_path / "grid.png"
    argv = ["sample", "--run", str(run), "--n", "3", "--out", str(samples)]
    assert main([*argv, "--grid-png", str(grid)]) == 0
    assert np.load(samples).shape == (3, 1, 8, 8) and np.isfinite(np.load(samples)).all()
    with Image.open(grid) as picture:
        assert picture.size[0] >= 3 * 32
    # Resuming continues the checkpointed run: its first two losses are the first run's.
    first = np.load(run / "losses.npy")
    assert main([*train, "--steps", "4", "--resume"]) == 0
    resumed = np.load(run / "losses.npy")
    assert resumed.shape == (4,) and np.array_equal(resumed[:2], first)
    capsys.readouterr()
    assert main(["export", str(run), "--diffusers", str(tmp_path / "pipeline")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "an EDM-preconditioned VE model has no diffusers pipeline" in err[0]
    assert not (tmp_path / "pipeline").exists()


# --- the EDM MLP on the tutorial's mixture (docs/benchmarks.md, "EDM preconditioning on the
# mixture") --------------------------------------------------------------------------------------


@pytest.mark.slow  # trains the demo's 5000 steps at batch 1024: 5-10 minutes on 2 CPU cores
def test_the_edm_mlp_with_the_modes_sigma_law_leaves_at_most_one_percent_far(tmp_path):
    """The demo's network under EDM's preconditioning and weighting, with ln sigma ~
    N(ln sqrt(0.32 x 10), (ln(10 / 0.32) / 4)^2) (95% of the training levels between the modes'
    width and their spacing), trained within the demo's budget, samples the mixture with at most
    1% of its samples between modes at 20 NFE (DPM-Solver++(2M) 20, Heun 19), on the
    benchmark's grid and seeds (Karras rho 7 from 0.02 to 80, seeds 0 and 1 x 3000). The bound
    allows three binomial standard errors of 6000 samples at 1% (0.39%), which the earlier
    models (log-uniform law, 1.5-2.6% far) exceed; the within-mode variance ratio must lie in
    the sampler map's band."""
    from scorelab.demo import DemoSettings
    from scorelab.runs import load_run
    from scorelab.sweep import VAR_RATIO_BAND, mean_rows, sweep, sweep_sampler
    from scorelab.targets import seed_mixture
    from scorelab.workflows import train_run

    values = DemoSettings().experiment("ncsn").to_dict()
    values["model"] = {**values["model"], "preconditioning": "edm"}
    width, spacing = 0.1**0.5, 10.0
    law = {"sigma_distribution": "lognormal", "p_mean": 0.5 * np.log(width * spacing),
           "p_std": np.log(spacing / width) / 4}  # fmt: skip
    values["loss"] = {**values["loss"], "weighting": "edm", **law}
    config = ExperimentConfig.from_dict(values)
    train_run(config, tmp_path / "edm", data=builders.make_data(config.data))
    model = load_run(tmp_path / "edm")[1]
    target = seed_mixture()
    n, seeds = 3000, (0, 1)
    result = sweep(target, [sweep_sampler("dpmpp_2m"), sweep_sampler("heun")], [20],
                   {"edm": model}, n_samples=n, seeds=seeds, grid="karras", sigma_min=0.02,
                   sigma_max=80.0, rho=7.0)  # fmt: skip
    bound = 0.01 + 3 * np.sqrt(0.01 * 0.99 / (n * len(seeds)))
    low, high = VAR_RATIO_BAND
    for row in mean_rows(result.rows):
        assert row["far"] <= bound, row
        assert low <= row["var_ratio"] <= high, row


def test_an_integer_example_is_scored_as_floats():
    """sigma was cast to x's dtype: 0.5 became 0 for an integer x, and the score NaN."""
    wrapped = EDMPreconditioned(lambda a, c_noise: a, 0.5)
    as_int, as_float = jnp.array([1, 2]), jnp.array([1.0, 2.0])
    np.testing.assert_array_equal(wrapped(as_int, 0.5), wrapped(as_float, 0.5))
    np.testing.assert_array_equal(wrapped.denoise(as_int, 0.5), wrapped.denoise(as_float, 0.5))


@pytest.mark.parametrize("sigma_data", [-1.0, 0.0, float("nan"), float("inf")])
def test_edm_coefficients_reject_a_bad_sigma_data(sigma_data):
    """A negative sigma_data gave c_out = -0.707 (EDMPreconditioned checked it, this did not)."""
    with pytest.raises(ValueError, match="sigma_data: expected"):
        edm_coefficients(1.0, sigma_data)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), jnp.array([0.5, 0.0])])
def test_edm_coefficients_reject_a_concrete_sigma_not_positive(sigma):
    """``sigma = 0`` gave c_noise = -inf; a traced sigma under jit is not value-checked."""
    with pytest.raises(ValueError, match="sigma: expected"):
        edm_coefficients(sigma, 0.5)
    coefficients = jax.jit(edm_coefficients, static_argnums=1)(jnp.float32(0.5), 0.5)
    assert np.isfinite(coefficients.c_noise)


@pytest.mark.parametrize(
    "call, error, argument",
    [
        # a scalar output was broadcast over x: a wrong score, no error
        (lambda: EDMPreconditioned(lambda a, c: jnp.sum(a), 0.5)(jnp.ones(2), 1.0), ValueError,
         "network"),
        (lambda: EDMPreconditioned(lambda a, c: a[:1], 0.5)(jnp.ones(2), 1.0), ValueError,
         "network"),
        (lambda: EDMPreconditioned(lambda a, c: (a, a), 0.5)(jnp.ones(2), 1.0), TypeError,
         "network"),
        (lambda: EDMPreconditioned(lambda a, c: a.astype(jnp.complex64), 0.5)(jnp.ones(2), 1.0),
         TypeError, "network"),
        (lambda: EDMPreconditioned(3, 0.5), TypeError, "network"),  # failed at the first call
        (lambda: EDMPreconditioned(lambda a, c: a, 0.5)(jnp.ones(2), jnp.ones(2)), ValueError,
         "sigma"),
        (lambda: EDMPreconditioned(lambda a, c: a, 0.5)(jnp.ones(2), 0.0), ValueError, "sigma"),
        (lambda: EDMPreconditioned(lambda a, c: a, 0.5)(jnp.ones(2), 1e30), ValueError, "sigma"),
        (lambda: EDMPreconditioned(lambda a, c: a, 0.5)(jnp.ones(2), 1j), TypeError, "sigma"),
        (lambda: EDMPreconditioned(lambda a, c: a, 0.5).denoise(jnp.ones(2) * 1j, 1.0),
         TypeError, "x"),
        (lambda: EDMPreconditioned(lambda a, c: a, "0.5"), ValueError, "sigma_data"),
    ],
)  # fmt: skip
def test_a_bad_network_example_or_level_is_named(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}: ") as raised:
        call()
    assert "\n" not in str(raised.value)


def test_the_network_shape_check_holds_under_jit_and_a_list_example_is_converted():
    wrapped = EDMPreconditioned(lambda a, c: jnp.sum(a), 0.5)
    with pytest.raises(ValueError, match=r"^network: returned shape \(\) for an input of shape"):
        jax.jit(wrapped)(jnp.ones(2), 1.0)
    identity = EDMPreconditioned(lambda a, c: a, np.float64(0.5))
    np.testing.assert_array_equal(identity([1.0, 2.0], 0.5), identity(jnp.array([1.0, 2.0]), 0.5))


def test_levels_beyond_float32_s_range_are_refused():
    """``edm_coefficients(1e30, 0.5)`` gave ``c_out = 0`` and ``sigma_data = 1e20`` a NaN
    ``c_skip`` (and NaN scores from :class:`EDMPreconditioned`) without a word (pass 19A,
    #6): noise levels beyond float32's range are refused as everywhere else."""
    from scorelab.models import ConditionalMLP

    with pytest.raises(ValueError, match=r"^sigma: 1e\+30 is beyond 9\.2e18"):
        edm_coefficients(1e30, 0.5)
    with pytest.raises(ValueError, match=r"^sigma: 1e\+30 is beyond"):
        edm_coefficients(np.asarray([1.0, 1e30]), 0.5)
    with pytest.raises(ValueError, match=r"^sigma_data: 1e\+20 is beyond"):
        edm_coefficients(1.0, 1e20)
    with pytest.raises(ValueError, match=r"^sigma_data: 1e\+20 is beyond"):
        EDMPreconditioned(ConditionalMLP(jax.random.key(0), 2, (4, 4, 4)), 1e20)


def test_edm_preconditioning_refuses_a_zero_sigma_data():
    """c_skip, c_out and c_in divide by sigma_data: 0 gave NaN denoisers."""
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPreconditioned(lambda x, c: x, sigma_data=0.0)

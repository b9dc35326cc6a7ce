"""The trainable U-Net: its initialisation law, the exact export, the VP epsilon loss against
its closed form, the configuration and the ``export`` command; live parity with diffusers'
``UNet2DModel`` and ``DDIMPipeline`` (marked ``diffusers``)."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorelab.checkpoints import load_model, save_model
from scorelab.cli import main
from scorelab.config import ConfigError, ExperimentConfig
from scorelab.diffusers import (
    UNet2D,
    UNetNetwork,
    VPEpsilonUNet,
    export_pipeline,
    load_pipeline,
    load_unet,
    unet_config,
)
from scorelab.losses import vp_epsilon_loss
from scorelab.models import MLP
from scorelab.noise import vp_alphas_cumprod

SHAPE = (1, 8, 8)
OPTIONS = {"channels": (16, 32), "attention_resolutions": (4,)}


def _config(**extra):
    return unet_config(SHAPE, **OPTIONS, **extra)


def _leaves_equal(a, b) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b)
    )


@pytest.fixture(scope="module")
def model():
    return VPEpsilonUNet(jax.random.key(0), SHAPE, **OPTIONS)


# --- initialisation -----------------------------------------------------------------------------


def test_init_draws_pytorchs_default_law_tensor_by_tensor():
    # Weights and biases of a layer of fan-in f are U(-b, b), b = 1/sqrt(f): |w| <= b, E w = 0,
    # E w^2 = b^2/3 with Var w^2 = 4 b^4/45; group norms start at (1, 0); the class embedding
    # is N(0, 1) (E w^2 = 1, Var w^2 = 2). Each tensor of >= 100 entries is checked to 5 SE.
    unet = UNet2D.init(jax.random.key(0), _config(num_class_embeds=10))
    tensors = unet.state_dict()
    checked = 0
    for name, value in tensors.items():
        stem = name.rsplit(".", 1)[0]
        if stem == "class_embedding":
            mean_square, var_square = 1.0, 2.0
        elif tensors[f"{stem}.weight"].ndim == 1:
            expected = 1.0 if name.endswith("weight") else 0.0
            assert np.all(value == expected), name
            continue
        else:
            bound = 1 / math.sqrt(np.prod(tensors[f"{stem}.weight"].shape[1:]))
            assert np.max(np.abs(value)) <= bound, name
            mean_square, var_square = bound**2 / 3, 4 * bound**4 / 45
        if value.size < 100:
            continue
        n = value.size
        assert abs(np.mean(value)) < 5 * math.sqrt(mean_square / n), name
        assert abs(np.mean(value**2) - mean_square) < 5 * math.sqrt(var_square / n), name
        checked += 1
    assert checked > 20


@pytest.mark.slow  # three eager inits of a U-Net: tens of seconds of op-by-op dispatch
def test_init_is_reproducible_per_key_and_traces_without_allocating():
    a = UNet2D.init(jax.random.key(3), _config())
    assert _leaves_equal(a, UNet2D.init(jax.random.key(3), _config()))
    other = UNet2D.init(jax.random.key(4), _config())
    assert not np.array_equal(a.conv_in.weight, other.conv_in.weight)
    # two tensors of one shape get independent draws
    tensors = a.state_dict()
    conv1, conv2 = (tensors[f"down_blocks.0.resnets.0.conv{i}.weight"] for i in (1, 2))
    assert conv1.shape == conv2.shape and not np.array_equal(conv1, conv2)
    shapes = jax.eval_shape(lambda: UNet2D.init(jax.random.key(0), _config()))
    assert jax.tree.structure(shapes) == jax.tree.structure(a)


def test_state_dict_is_the_exact_inverse_of_loading():
    unet = UNet2D.init(jax.random.key(1), _config(num_class_embeds=3))
    tensors = unet.state_dict()
    assert "class_embedding.weight" in tensors
    assert tensors["conv_in.weight"].shape == (16, 1, 3, 3)  # OIHW, as PyTorch
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert _leaves_equal(UNet2D.from_weights(dict(unet.config), tensors), unet)


def test_class_labels_are_required_by_a_conditional_unet_and_refused_otherwise():
    conditional = UNet2D.init(jax.random.key(0), _config(num_class_embeds=3))
    x = jnp.zeros((2, *SHAPE))
    out = eqx.filter_jit(conditional)(x, 5, jnp.array([0, 2]))
    assert not np.allclose(out[0], out[1])  # the label changes the output
    with pytest.raises(ValueError, match="class_labels"):
        eqx.filter_eval_shape(conditional, x, 5)
    unconditional = UNet2D.init(jax.random.key(0), _config())
    with pytest.raises(ValueError, match="class_labels"):
        eqx.filter_eval_shape(unconditional, x, 5, jnp.array([0, 1]))


def test_options_a_unet_cannot_take_are_one_line_errors():
    with pytest.raises(ValueError, match=r"attention_resolutions: \[3\].*\[8, 4\]"):
        unet_config(SHAPE, channels=(16, 32), attention_resolutions=(3,))
    with pytest.raises(ValueError, match="U-Net options: norm_num_groups 8 must divide"):
        UNetNetwork(jax.random.key(0), SHAPE, channels=(12, 32))


# --- the score model ----------------------------------------------------------------------------


@pytest.mark.slow  # a U-Net at every level
def test_score_is_minus_the_predicted_noise_over_sigma_at_the_schedules_levels(model):
    # At the VE level of timestep t, s(x, sigma_t) = -eps(sqrt(abar_t) x_t^VE, t) / sigma_t,
    # with x^VE = x_t / sqrt(abar_t): the U-Net sees DDPM's x_t at its own timestep.
    alphas_cumprod = vp_alphas_cumprod()
    x = jax.random.normal(jax.random.key(1), SHAPE)
    for t in (0, 200, 999):
        abar = float(alphas_cumprod[t])
        sigma = math.sqrt((1 - abar) / abar)
        score = jax.jit(lambda x, sigma: model(x, sigma))(x, sigma)
        eps = eqx.filter_jit(model.network.unet)(x[None] * math.sqrt(abar), t)[0]
        np.testing.assert_allclose(score, -eps / sigma, rtol=1e-4, atol=1e-4 / sigma)


@pytest.mark.slow  # about 11 s of a worker: kept out of the default suite's 15 minutes
def test_raw_network_is_the_unet_at_any_real_noise_conditioning(model):
    x = jax.random.normal(jax.random.key(2), SHAPE)
    c_noise = -0.3  # EDM's ln(sigma)/4
    np.testing.assert_array_equal(
        model.network(x, c_noise), model.network.unet(x[None], jnp.array([c_noise]))[0]
    )


def test_save_and_load_rebuild_the_model(model, tmp_path):
    kwargs = {"image_shape": list(SHAPE), **{k: list(v) for k, v in OPTIONS.items()}}
    save_model(tmp_path / "model", model, **kwargs)
    assert _leaves_equal(load_model(tmp_path / "model"), model)


@pytest.mark.slow  # a U-Net compiled in float64 too: a minute on 2 cores
def test_a_float32_unet_samples_float64_states_under_x64(model, tmp_path):
    """Under jax_enable_x64 the samplers compute in float64; a float32 U-Net (every one
    scorelab trains or loads) was refused by its convolutions ('lax.conv_general_dilated
    requires arguments to have the same dtypes'). It now computes in its weights' float32 and
    answers in the state's width: deterministic DDIM gives the float32 sample within float32
    rounding."""
    from scorelab import samplers
    from scorelab.noise import geometric_sigmas

    kwargs = {"image_shape": list(SHAPE), **{k: list(v) for k, v in OPTIONS.items()}}
    save_model(tmp_path / "model", model, **kwargs)
    x_T = samplers.ve_prior(jax.random.key(1), 4, SHAPE, np.float32(10.0))
    sampler = samplers.DDIM(sigmas=geometric_sigmas(6, 0.05, 10.0), eta=0.0)
    narrow = samplers.sample(jax.random.key(2), sampler, model, x_T).x
    with jax.enable_x64(True):
        loaded = load_model(tmp_path / "model")
        wide_sampler = samplers.DDIM(sigmas=geometric_sigmas(6, 0.05, 10.0), eta=0.0)
        x = jnp.asarray(x_T, jnp.float64)
        wide = samplers.sample(jax.random.key(2), wide_sampler, loaded, x).x
        assert wide.dtype == jnp.float64
    # The same float32 network evaluations, the update arithmetic in float64 rather than
    # float32: float32 rounding of outputs up to 29 in size, measured 3.2e-6 at most.
    np.testing.assert_allclose(np.asarray(wide), np.asarray(narrow), rtol=0, atol=1e-4)


# --- the VP epsilon loss ------------------------------------------------------------------------


def test_vp_epsilon_loss_is_ddpms_noise_regression(model):
    # The same draw as the loss (t from the first sub-key, eps from the second), written in
    # DDPM's own coordinates: || eps(sqrt(abar) x_0 + sqrt(1 - abar) eps, t) - eps ||^2 / d.
    x_0 = jax.random.uniform(jax.random.key(5), SHAPE, minval=-1, maxval=1)
    alphas_cumprod = vp_alphas_cumprod()
    for seed in range(3):
        key = jax.random.key(seed)
        key_t, key_eps = jax.random.split(key)
        t = int(jax.random.randint(key_t, (), 0, 1000))
        eps = jax.random.normal(key_eps, SHAPE)
        abar = alphas_cumprod[t]
        x_t = math.sqrt(abar) * x_0 + math.sqrt(1 - abar) * eps
        expected = jnp.mean((model.network.unet(x_t[None], t)[0] - eps) ** 2)
        got = jax.jit(lambda k: vp_epsilon_loss(k, model, x_0))(key)
        np.testing.assert_allclose(got, expected, rtol=2e-4)


def _gaussian_score(c, s):
    # c times the exact VE score of N(0, s^2 I): -c x / (s^2 + sigma^2)
    return lambda x, sigma: -c * x / (s**2 + sigma**2)


@pytest.mark.slow  # about 11 s of a worker: kept out of the default suite's 15 minutes
def test_vp_epsilon_loss_minimiser_for_gaussian_data():
    # For x_0 ~ N(0, s^2 I), eps* = E[eps | x_t] is the exact score's, the loss there is
    # (1/T) sum_t abar_t s^2 / (abar_t s^2 + 1 - abar_t), and the gradient of the expected loss
    # in the score's scale c vanishes at c = 1 and not at c = 1.2; each to 4 standard errors.
    s, n, d = 0.5, 20_000, 4
    keys = jax.random.split(jax.random.key(0), n)
    x_0 = s * jax.random.normal(jax.random.key(1), (n, d))

    def loss(c, key, x):
        return vp_epsilon_loss(key, _gaussian_score(c, s), x, num_train_timesteps=100)

    values = jax.vmap(lambda k, x: loss(1.0, k, x))(keys, x_0)
    abar = vp_alphas_cumprod(num_train_timesteps=100).astype(np.float64)
    expected = np.mean(abar * s**2 / (abar * s**2 + 1 - abar))
    assert abs(np.mean(values) - expected) < 4 * np.std(values) / math.sqrt(n)
    for c, zero in ((1.0, True), (1.2, False)):
        grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(c, keys, x_0)
        standard_error = np.std(grads) / math.sqrt(n)
        assert (abs(np.mean(grads)) < 4 * standard_error) == zero, (c, np.mean(grads))


# --- configuration ------------------------------------------------------------------------------


def test_config_unet_samples_over_its_schedules_levels():
    config = ExperimentConfig.from_dict(
        {"model": {"name": "unet", "channels": [16, 32]}, "loss": {"name": "vp_epsilon"}}
    )
    abar = vp_alphas_cumprod()
    assert config.sampler.sigma_min == pytest.approx(math.sqrt((1 - abar[0]) / abar[0]), 1e-5)
    assert config.sampler.sigma_max == pytest.approx(math.sqrt((1 - abar[-1]) / abar[-1]), 1e-5)
    assert ExperimentConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": {"name": "unet"}, "loss": {"name": "ncsn"}}, "model.name: 'unet' predicts"),
        ({"model": {"name": "unet"}, "loss": {"name": "vp_epsilon", "schedule": "x"}}, "schedule"),
        ({"model": {"channels": []}}, "model.channels"),
        ({"loss": {"name": "vp_epsilon", "beta_end": 1e-5}}, "loss.beta_end"),
    ],
)
def test_config_errors_name_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(values)


def test_make_model_needs_images():
    from scorelab.builders import make_model

    config = ExperimentConfig.from_dict({"model": {"name": "unet"}, "loss": {"name": "vp_epsilon"}})
    with pytest.raises(ConfigError, match=r"needs images \(n, C, H, W\)"):
        make_model(config.model, config.loss, np.zeros((10, 64), np.float32))
    model, kwargs = make_model(config.model, config.loss, np.zeros((10, *SHAPE), np.float32))
    assert isinstance(model, VPEpsilonUNet) and kwargs["image_shape"] == list(SHAPE)


# --- export -------------------------------------------------------------------------------------


def test_export_round_trip_is_exact(model, tmp_path):
    folder = export_pipeline(model, tmp_path / "pipeline")
    assert _leaves_equal(load_unet(folder), model.network.unet)
    unet, scheduler = load_pipeline(folder)
    assert _leaves_equal(unet, model.network.unet) and scheduler == model.scheduler
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]  # no staging left


def test_a_cosine_model_exports_diffusers_spelling_of_its_schedule(tmp_path):
    """A run trained with scorelab's alias ``cosine`` exported it as written, and diffusers'
    DDIMPipeline refused the folder: 'cosine is not implemented' (pass 28, #1)."""
    cosine = VPEpsilonUNet(jax.random.key(0), SHAPE, schedule="cosine", channels=(8, 8),
                           norm_groups=4)  # fmt: skip
    folder = export_pipeline(cosine, tmp_path / "pipeline")
    written = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert written["beta_schedule"] == "squaredcos_cap_v2"
    _, scheduler = load_pipeline(folder)
    np.testing.assert_array_equal(scheduler.alphas_cumprod(), cosine.scheduler.alphas_cumprod())


@pytest.mark.diffusers
def test_diffusers_reads_an_exported_cosine_schedule(tmp_path):
    import torch
    from diffusers import DDIMScheduler

    torch.set_num_threads(1)
    cosine = VPEpsilonUNet(jax.random.key(0), SHAPE, schedule="cosine", channels=(8, 8),
                           norm_groups=4)  # fmt: skip
    folder = export_pipeline(cosine, tmp_path / "pipeline")
    reference = DDIMScheduler.from_pretrained(folder / "scheduler")
    np.testing.assert_allclose(
        reference.alphas_cumprod.numpy(), cosine.scheduler.alphas_cumprod(), rtol=1e-6
    )


def test_an_exported_two_channel_model_is_sampled_and_drawn_by_pretrained(tmp_path, capsys):
    """``scorelab pretrained`` sampled scorelab's own 2-channel export, then failed writing
    its grid: 'images must have shape (n, H, W, C), C in 1, 3, 4' (pass 15, #1)."""
    from PIL import Image

    from scorelab.diffusers import to_images

    two = VPEpsilonUNet(jax.random.key(1), (2, 8, 8), channels=(8, 8), norm_groups=4)
    folder = export_pipeline(two, tmp_path / "pipeline")
    out, grid = tmp_path / "x.npy", tmp_path / "grid.png"
    argv = ["pretrained", str(folder), "--steps", "2", "--n", "2", "--save-array", str(out)]
    assert main([*argv, "-o", str(grid)]) == 0, capsys.readouterr().err
    x = np.load(out)
    assert x.shape == (2, 2, 8, 8)
    with Image.open(grid) as image:  # two images in a row, each its 2 channels side by side
        pixels = np.asarray(image.convert("L"))[-8:, : 2 * 2 * 8]
    strips = [np.hstack([image[..., 0], image[..., 1]]) for image in to_images(x)]
    np.testing.assert_array_equal(pixels, np.hstack(strips))


def test_export_never_overwrites_and_refuses_what_diffusers_cannot_represent(model, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        export_pipeline(model, tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="a MLP has no diffusers pipeline"):
        export_pipeline(MLP(jax.random.key(0)), tmp_path / "mlp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def _run_dir(path, model, values, **kwargs):
    from scorelab._files import write_json

    path.mkdir()
    save_model(path / "model", model, **kwargs)
    write_json(path / "config.json", ExperimentConfig.from_dict(values).to_dict())
    return path


def test_export_command(model, tmp_path, capsys):
    kwargs = {"image_shape": list(SHAPE), **{k: list(v) for k, v in OPTIONS.items()}}
    model_values = {"name": "unet", **{k: list(v) for k, v in OPTIONS.items()}}
    values = {"model": model_values, "loss": {"name": "vp_epsilon"}, "data": {"source": "digits"}}
    run = _run_dir(tmp_path / "run", model, values, **kwargs)
    assert main(["export", str(run), "--diffusers", str(tmp_path / "out")]) == 0
    assert _leaves_equal(load_unet(tmp_path / "out"), model.network.unet)
    assert main(["export", str(run), "--diffusers", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    mlp_run = _run_dir(tmp_path / "mlp", MLP(jax.random.key(0), dim=2), {}, dim=2)
    assert main(["export", str(mlp_run), "--diffusers", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no diffusers pipeline" in err[0]


# --- live parity with diffusers -----------------------------------------------------------------


@pytest.mark.diffusers
def test_initialised_unet_forward_equals_diffusers(model):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    unet = UNet2D.init(jax.random.key(7), _config(num_class_embeds=4))
    reference = diffusers.UNet2DModel(**dict(unet.config)).eval()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in unet.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    labels = np.array([1, 3])
    for t in (0, 500, 999):
        with torch.no_grad():
            expected = reference(torch.from_numpy(x), t, torch.from_numpy(labels)).sample
        got = unet(jnp.asarray(x), t, jnp.asarray(labels))
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-4)


@pytest.mark.diffusers
@pytest.mark.parametrize(
    "extra",
    [
        {"num_class_embeds": 4},
        {  # Fourier features (N(0, 16^2) frequencies, 128 of them) and resnets that resample
            "time_embedding_type": "fourier",
            "block_out_channels": [128, 128],
            "down_block_types": ["ResnetDownsampleBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "ResnetUpsampleBlock2D"],
        },
        {"time_embedding_type": "learned", "num_train_timesteps": 1000},  # an N(0, 1) table
    ],
)
def test_init_law_matches_diffusers_own_initialisation(extra):
    # diffusers' UNet2DModel(**config) draws each tensor from PyTorch's default; ours must draw
    # from the same law: equal mean squares within 5 standard errors of their difference.
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    config = {**_config(), **extra}
    torch.manual_seed(0)
    theirs = {k: v.numpy() for k, v in diffusers.UNet2DModel(**config).state_dict().items()}
    ours = UNet2D.init(jax.random.key(0), config).state_dict()
    assert set(theirs) == set(ours)
    for name, value in ours.items():
        assert value.shape == theirs[name].shape, name
        a, b = value.ravel() ** 2, theirs[name].ravel() ** 2
        if a.size < 100:
            continue
        se = math.sqrt((np.var(a) + np.var(b)) / a.size)
        assert abs(np.mean(a) - np.mean(b)) <= 5 * se + 1e-12, name


@pytest.mark.diffusers
def test_exported_pipeline_samples_as_diffusers_ddim_pipeline(model, tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from scorelab.diffusers import run

    folder = export_pipeline(model, tmp_path / "pipeline")
    pipeline = diffusers.DDIMPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn((3, *SHAPE), generator=generator)  # what the pipeline draws first
    images = pipeline(
        batch_size=3,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=10,
        eta=0.0,
        output_type="np",
    ).images  # (B, H, W, C) in [0, 1]
    np.save(tmp_path / "x_T.npy", x_T.numpy())
    samples = run(
        folder,
        tmp_path / "grid.png",
        num_inference_steps=10,
        init_noise=tmp_path / "x_T.npy",
        save_array=tmp_path / "x_0.npy",
    )
    ours = np.clip(np.transpose(samples, (0, 2, 3, 1)) / 2 + 0.5, 0, 1)
    np.testing.assert_allclose(ours, images, rtol=0, atol=1e-3)

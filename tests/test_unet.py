"""The JAX UNet2DModel against diffusers: committed goldens (no torch), the legacy attention
names, config validation, and live parity on other configs (marked ``diffusers``)."""

import json
import shutil
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from scorelab.diffusers import UNet2D, load_unet, timestep_embedding

FIXTURES = Path(__file__).parent / "fixtures"
PIPELINE, GOLDEN = FIXTURES / "tiny_ddpm", FIXTURES / "tiny_ddpm_golden"


def _golden(name):
    return np.load(GOLDEN / f"{name}.npy")


def _tensors():
    return load_file(str(PIPELINE / "unet" / "diffusion_pytorch_model.safetensors"))


def _config():
    return json.loads((PIPELINE / "unet" / "config.json").read_text())


@eqx.filter_jit
def _forward_jit(unet, x, t):
    return unet(x, t)


def _forward(unet, x, t):
    # t as an array: a Python number would be static and recompile the network for each value.
    return _forward_jit(unet, x, jnp.asarray(t, jnp.float32 if isinstance(t, float) else jnp.int32))


def _assert_close_in_sup_norm(actual, expected, rtol):
    # Relative to the output's scale: float32 convolutions summed in another order differ by
    # ~1e-6 of the scale everywhere, so near-zero entries have no meaningful elementwise rtol.
    expected = np.asarray(expected)
    assert np.max(np.abs(np.asarray(actual) - expected)) <= rtol * np.max(np.abs(expected))


@pytest.fixture(scope="module")
def unet():
    return load_unet(PIPELINE)


def test_unet_matches_diffusers_golden_at_three_timesteps(unet):
    x = jnp.asarray(_golden("unet_input"))
    outputs = _golden("unet_output")
    for t, expected in zip(_golden("unet_timesteps"), outputs):
        _assert_close_in_sup_norm(_forward(unet, x, int(t)), expected, rtol=1e-5)
    # The timesteps matter: outputs at 999 and 0 differ by far more than the tolerance.
    assert np.max(np.abs(outputs[0] - outputs[2])) > 1e-2 * np.max(np.abs(outputs[0]))


def test_bare_model_folder_loads_the_same_network(unet, tmp_path):
    bare = tmp_path / "model"
    shutil.copytree(PIPELINE / "unet", bare)
    x = jnp.asarray(_golden("unet_input"))
    np.testing.assert_array_equal(_forward(load_unet(bare), x, 500), _forward(unet, x, 500))


def test_legacy_attention_names_load_the_same_network(unet):
    legacy_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for name, value in _tensors().items():
        for new, old in legacy_names.items():
            name = name.replace(f".{new}.", f".{old}.")
        legacy[name] = value
    assert any(".proj_attn." in name for name in legacy)
    x = jnp.asarray(_golden("unet_input"))
    np.testing.assert_array_equal(
        _forward(UNet2D.from_weights(_config(), legacy), x, 999), _forward(unet, x, 999)
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]},
            "down_block_types",
        ),
        ({"up_block_types": ["UpBlock2D", "SkipUpBlock2D", "UpBlock2D"]}, "up_block_types"),
        ({"time_embedding_type": "sinusoid"}, "time_embedding_type"),
        ({"time_embedding_type": "learned"}, "needs num_train_timesteps"),
        ({"downsample_type": "fir"}, "downsample_type"),
        ({"resnet_time_scale_shift": "spatial"}, "resnet_time_scale_shift"),
        ({"cross_attention_dim": 64}, "cross_attention_dim"),
        ({"class_embed_type": "timestep", "num_class_embeds": 10}, "class_embed_type"),
        ({"num_class_embeds": 0}, "num_class_embeds must be None or an integer"),
        ({"block_out_channels": [16, 16]}, "same length"),
    ],
)
def test_unsupported_configs_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        UNet2D.from_weights({**_config(), **change}, _tensors())


@pytest.mark.parametrize("kind", ["fourier", "learned"])
def test_freq_shift_bounds_only_the_positional_embedding_that_reads_it(kind):
    """A learned or Fourier embedding ignores freq_shift (diffusers builds and runs them): its
    bound, half the first level's channels, refused them (pass 28, #5)."""
    config = {
        "block_out_channels": [2], "norm_num_groups": 1, "layers_per_block": 1,
        "add_attention": False, "in_channels": 1, "out_channels": 1,
        "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"],
        "num_train_timesteps": 10, "sample_size": 4, "freq_shift": 1,
    }  # fmt: skip
    unet = UNet2D.init(jax.random.key(0), {**config, "time_embedding_type": kind})
    assert dict(unet.config)["freq_shift"] == 1
    with pytest.raises(ValueError, match=r"freq_shift must be a number in \[0, 1\)"):
        UNet2D.init(jax.random.key(0), {**config, "time_embedding_type": "positional"})


_SMALL = {
    "block_out_channels": [8, 8], "norm_num_groups": 4, "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"], "in_channels": 1, "out_channels": 1,
    "sample_size": 8, "add_attention": False,
}  # fmt: skip


@pytest.mark.parametrize(("kind", "trained"), [("fourier", False), ("learned", True)])
def test_training_s_filter_leaves_out_a_fourier_embedding_s_frequencies(kind, trained):
    from scorelab.training import trainable

    unet = UNet2D.init(jax.random.key(0), {**_SMALL, "time_embedding_type": kind,
                                           "num_train_timesteps": 10})  # fmt: skip
    params, rest = eqx.partition(unet, trainable(unet))
    assert (params.time_proj is not None) == trained == (rest.time_proj is None)
    assert params.conv_in.weight is not None and rest.conv_in.weight is None


@pytest.mark.slow  # two U-Net trainings' compilations, about 40 s
def test_a_fourier_embedding_s_frequencies_are_not_trained():
    """diffusers keeps GaussianFourierProjection's weight fixed (requires_grad=False); train()
    trained it, decayed it and clipped its gradient with the rest (pass 30, #1). A learned
    embedding's table does train."""
    from scorelab.training import TrainConfig, train

    config = TrainConfig(steps=2, optimizer="adamw", weight_decay=0.1, grad_clip=1.0,
                         learning_rate=0.1, batch_size=4)  # fmt: skip
    data = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    for kind, trained in (("fourier", False), ("learned", True)):
        unet = UNet2D.init(jax.random.key(0), {**_SMALL, "time_embedding_type": kind,
                                               "num_train_timesteps": 10})  # fmt: skip
        t = 2.0 if kind == "fourier" else 2  # a noise level, a timestep
        loss = lambda key, net, x, t=t: jnp.mean((net(x[None], t)[0] - x) ** 2)  # noqa: E731
        result = train(jax.random.key(1), unet, loss, data, config, progress=False)
        moved = not np.array_equal(result.model.time_proj, unet.time_proj)
        assert moved == trained, kind
        assert not np.array_equal(result.model.conv_in.weight, unet.conv_in.weight)


def test_a_learned_embedding_rounds_a_timestep_within_rounding_of_an_integer():
    """from_epsilon's float32 t(sigma) of a level lands within 1e-4 of its integer: under jit
    the table's row was the truncated one (t - 1 at 0.7% of the levels), eagerly refused
    (pass 30, #2); both now take the nearest row, and a value between rows is refused."""
    unet = UNet2D.init(jax.random.key(0), {**_SMALL, "time_embedding_type": "learned",
                                           "num_train_timesteps": 200})  # fmt: skip
    x = jax.random.normal(jax.random.key(1), (1, 1, 8, 8))
    below = np.nextafter(np.float32(124), np.float32(0)) - np.float32(1e-5)  # 123.99998
    at_124 = _forward(unet, x, 124.0)  # float timesteps throughout: one compilation
    np.testing.assert_array_equal(_forward(unet, x, float(below)), at_124)  # jit
    eager = unet(x, jnp.float32(below))  # accepted outside jit too, the same row
    np.testing.assert_allclose(eager, at_124, rtol=0, atol=1e-5 * float(jnp.abs(at_124).max()))
    assert not np.array_equal(at_124, _forward(unet, x, 123.0))
    with pytest.raises(ValueError, match="one row per integer timestep"):
        unet(x, 123.5)


def test_checkpoint_not_matching_its_config_is_an_error():
    tensors = _tensors()
    missing = {k: v for k, v in tensors.items() if k != "conv_out.bias"}
    with pytest.raises(ValueError, match="conv_out.bias"):
        UNet2D.from_weights(_config(), missing)
    extra = {**tensors, "class_embedding.weight": np.zeros((10, 64), np.float32)}
    with pytest.raises(ValueError, match="does not use: class_embedding.weight"):
        UNet2D.from_weights(_config(), extra)


def test_folder_without_a_model_or_safetensors_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no UNet2DModel"):
        load_unet(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(_config()))
    with pytest.raises(ValueError, match="safetensors not found; download the pipeline again$"):
        load_unet(tmp_path)
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"a torch pickle")
    with pytest.raises(ValueError, match="a .bin-only checkpoint needs .*save_pretrained"):
        load_unet(tmp_path)


@pytest.mark.parametrize("flip, shift, dim", [(False, 1, 32), (True, 0, 33)])
def test_timestep_embedding_closed_form(flip, shift, dim):
    t = np.array([0, 7, 999])
    half = dim // 2
    omega = np.exp(-np.log(10000) * np.arange(half) / (half - shift))
    angles = t[:, None] * omega[None]
    parts = [np.cos(angles), np.sin(angles)] if flip else [np.sin(angles), np.cos(angles)]
    expected = np.pad(np.concatenate(parts, axis=1), ((0, 0), (0, dim % 2)))
    np.testing.assert_allclose(
        timestep_embedding(jnp.asarray(t), dim, flip, shift), expected, atol=2e-4
    )


# --- live parity with diffusers on configs the fixture does not cover -------------------------


@pytest.mark.diffusers
@pytest.mark.parametrize(
    "options",
    [
        # DDPM CIFAR-10's layout, one head per attention (attention_head_dim None)
        dict(
            block_out_channels=(16, 32, 32, 32),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=None,
            downsample_padding=0,
            flip_sin_to_cos=False,
            freq_shift=1,
        ),
        # scale-shift conditioning (mid attention without GroupNorm), centred input, padding 1,
        # mid-block output scale, diffusers' defaults elsewhere
        dict(
            block_out_channels=(16, 32),
            down_block_types=("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D"),
            resnet_time_scale_shift="scale_shift",
            center_input_sample=True,
            mid_block_scale_factor=2.0,
            layers_per_block=1,
            in_channels=1,
            out_channels=2,
        ),
        dict(
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "UNetResDownBlock2D"),  # the legacy name
            up_block_types=("UpBlock2D", "UpBlock2D"),
            add_attention=False,
            time_embedding_dim=48,
        ),
        # the consistency models' layout: resnets that resample (avg-pool / nearest inside),
        # as their own block types and as the attention blocks' downsample/upsample_type
        dict(
            block_out_channels=(16, 32, 32),
            down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
            downsample_type="resnet",
            upsample_type="resnet",
            resnet_time_scale_shift="scale_shift",
            attention_head_dim=8,
            dropout=0.1,  # evaluation mode: none applied
        ),
        # score_sde's noise-level networks: Fourier features of log sigma, output over sigma
        dict(
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            time_embedding_type="fourier",
            layers_per_block=1,
            freq_shift=8,  # read by positional embeddings only: it was refused (pass 28, #5)
        ),
        # a learned table of timestep embeddings
        dict(
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            time_embedding_type="learned",
            num_train_timesteps=1000,
            layers_per_block=1,
            freq_shift=8,
        ),
    ],
)
def test_unet_matches_diffusers_live(options):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    reference = diffusers.UNet2DModel(sample_size=16, norm_num_groups=8, **options).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if "norm" in name:
                parameter.add_(0.2 * torch.randn_like(parameter))
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
    ours = UNet2D.from_weights(dict(reference.config), tensors)
    x = np.random.default_rng(0).standard_normal((2, options.get("in_channels", 3), 16, 16))
    x = x.astype(np.float32)
    # a Fourier network takes noise levels sigma > 0 (it embeds log sigma), the others steps
    fourier = options.get("time_embedding_type") == "fourier"
    for t in (0.002, 1.0, 80.0) if fourier else (0, 321, 999):
        with torch.no_grad():
            # (a Python number is cast to an integer step there, a tensor kept as it is)
            expected = reference(torch.from_numpy(x), torch.tensor(t)).sample.numpy()
        _assert_close_in_sup_norm(_forward(ours, jnp.asarray(x), t), expected, rtol=1e-5)
    rebuilt = UNet2D.from_weights(dict(reference.config), ours.state_dict())  # the export
    np.testing.assert_array_equal(_forward(rebuilt, x, t), _forward(ours, x, t))


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [
        (4, 3, 1, ((1, 1), (1, 1))),  # a deep level's 3x3 convolution
        (2, 3, 1, ((1, 1), (1, 1))),
        (1, 3, 1, ((1, 1), (1, 1))),
        (8, 3, 2, ((0, 1), (0, 1))),  # diffusers' downsampler: stride 2, padding (0, 1)
        (3, 1, 1, ((0, 0), (0, 0))),  # a 1x1 shortcut
    ],
)
def test_small_convolutions_as_one_matmul_equal_xla_convolution(size, kernel, stride, padding):
    # On a CPU, convolutions of <= 16 output pixels take the im2col path (unet._IM2COL_MAX_PIXELS)
    # and the rest XLA's convolution; both must compute the same function.
    from scorelab.diffusers import _unet as unet

    rng = np.random.default_rng(0)
    conv = unet._Conv(
        jnp.asarray(rng.normal(size=(kernel, kernel, 5, 7)), jnp.float32),
        jnp.asarray(rng.normal(size=7), jnp.float32),
        stride,
        padding,
    )
    x = jnp.asarray(rng.normal(size=(2, size, size, 5)), jnp.float32)
    as_matmul = conv.im2col(x)
    as_convolution = conv.xla(x)
    assert as_matmul.shape == as_convolution.shape
    np.testing.assert_allclose(as_matmul, as_convolution, rtol=1e-5, atol=1e-5)
    h_out, w_out = as_convolution.shape[1:3]
    on_matmul = jax.default_backend() == "cpu" and h_out * w_out <= unet._IM2COL_MAX_PIXELS
    np.testing.assert_array_equal(conv(x), as_matmul if on_matmul else as_convolution)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "c_out"),
    [
        (6, 3, 1, ((1, 1), (1, 1)), 9),  # above the im2col size: XLA's forward, matmul derivatives
        (10, 3, 2, ((0, 1), (0, 1)), 8),  # a downsampler
        (5, 1, 1, ((0, 0), (0, 0)), 12),  # a 1x1 shortcut
        (6, 3, 1, ((1, 1), (1, 1)), 1),  # a 1-channel conv_out: XLA's throughout
        (3, 3, 1, ((1, 1), (1, 1)), 9),  # im2col throughout
    ],
)
def test_convolution_derivatives_equal_xla_convolution(size, kernel, stride, padding, c_out):
    # Whichever path _Conv takes on this backend, its value, gradient (w.r.t. the weight, the
    # bias and the input) and forward-mode tangent are those of XLA's convolution; tangents of
    # only the input, or only the weights, take the symbolic-zero branches of the custom rule.
    from scorelab.diffusers import _unet as unet

    rng = np.random.default_rng(1)
    conv = unet._Conv(
        jnp.asarray(rng.normal(size=(kernel, kernel, 5, c_out)), jnp.float32),
        jnp.asarray(rng.normal(size=c_out), jnp.float32),
        stride,
        padding,
    )
    x = jnp.asarray(rng.normal(size=(2, size, size, 5)), jnp.float32)
    direction = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

    def loss(conv, x, apply):
        return jnp.sum(jnp.sin(apply(conv, x)))

    ours = jax.grad(loss, argnums=(0, 1))(conv, x, lambda c, x: c(x))
    xla = jax.grad(loss, argnums=(0, 1))(conv, x, lambda c, x: c.xla(x))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(xla)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    only_x = jax.grad(lambda x: loss(conv, x, lambda c, x: c(x)))(x)
    np.testing.assert_allclose(only_x, xla[1], rtol=1e-4, atol=1e-4)
    only_weights = eqx.filter_grad(lambda c: loss(c, x, lambda c, x: c(x)))(conv)
    np.testing.assert_allclose(only_weights.weight, xla[0].weight, rtol=1e-4, atol=1e-4)
    value, tangent = jax.jvp(conv, (x,), (direction,))
    np.testing.assert_allclose(value, conv.xla(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tangent, conv.xla(direction) - conv.bias, rtol=1e-4, atol=1e-4)


def test_an_initialisation_drawn_in_few_programs_equals_the_direct_draws():
    """Each tensor is drawn as a flat power-of-four draw, cut (a tiny U-Net's first build
    compiled one program per tensor shape); with the partitionable threefry, element i depends
    on the key and i alone, so a tensor equals its direct draw, bit for bit: shapes at and
    just above a power of four, of one element, and of a U-Net's weights."""
    from scorelab.diffusers import _unet

    key = jax.random.key(3)
    for shape in [(1,), (64,), (65,), (16, 8, 3, 3), (5, 7, 2)]:
        for draw, bounds in ((jax.random.uniform, {"minval": -0.3, "maxval": 0.3}),
                             (jax.random.normal, {})):  # fmt: skip
            direct = np.asarray(draw(key, shape, jnp.float32, **bounds))
            cut = np.asarray(_unet._drawn(draw, key, shape, **bounds))
            assert cut.dtype == np.float32 and np.array_equal(cut, direct), (shape, draw)


def test_a_timestep_embedding_beyond_the_memory_is_refused():
    """``timestep_embedding(t, 10**12, ...)`` tried 2 TB (pass 19A, #5)."""
    with pytest.raises(ValueError, match=r"^dim: needs .* of memory"):
        timestep_embedding(jax.numpy.array([1.0]), 10**12, True, 0.0)

"""A pretrained loader that trusts nothing: a corpus of damaged copies of the tiny fixture.

Each case copies ``tests/fixtures/tiny_ddpm`` into ``tmp_path``, damages one file (a field of
a configuration, a tensor, the safetensors bytes) and loads it: the loader must refuse it with
a :class:`PretrainedError` whose message is one line naming the file and the field or tensor.
A few cases go through the ``scorelab`` command in a subprocess: exit status 2, one line on
stderr, no traceback.
"""

import contextlib
import io
import json
import os
import shutil
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from scorelab.cli import main
from scorelab.diffusers import PretrainedError, UNet2D, load_pipeline, run

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "tests" / "fixtures" / "tiny_ddpm"
UNET_CONFIG = Path("unet") / "config.json"
SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


def _copy(tmp_path) -> Path:
    folder = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, folder)
    return folder


# --- damage, one file at a time ----------------------------------------------------------------


def _config_field(file, **changes):
    def damage(folder):
        config = json.loads((folder / file).read_text())
        (folder / file).write_text(json.dumps({**config, **changes}))

    return damage


def _config_text(file, text: bytes):
    def damage(folder):
        (folder / file).write_bytes(text)

    return damage


def _tensors(change):
    def damage(folder):
        tensors = load_file(str(folder / WEIGHTS))
        change(tensors)
        save_file(tensors, str(folder / WEIGHTS))

    return damage


def _set(name, value):
    return _tensors(lambda tensors: tensors.__setitem__(name, value))


def _poison(name, value):
    def change(tensors):
        tensors[name] = tensors[name].copy()
        tensors[name].flat[1] = value

    return _tensors(change)


def _weights_bytes(edit):
    def damage(folder):
        data = (folder / WEIGHTS).read_bytes()
        (folder / WEIGHTS).write_bytes(edit(data))

    return damage


def _legacy_duplicate(tensors):
    name = next(n for n in tensors if ".to_q.weight" in n)
    tensors[name.replace(".to_q.", ".query.")] = tensors[name]


def _nan_first_and_bad_shape_last(tensors):
    # conv_in is the first tensor the network reads, conv_out among the last: the shapes are
    # all checked before any value is read, so the shape is what is reported.
    tensors["conv_in.weight"] = np.full_like(tensors["conv_in.weight"], np.nan)
    tensors["conv_out.weight"] = np.zeros((3, 16, 1, 1), np.float32)


def _scheduler_config_folder(folder):
    (folder / SCHEDULER_CONFIG).unlink()
    (folder / SCHEDULER_CONFIG).mkdir()


def _scheduler_config_missing(folder):
    (folder / SCHEDULER_CONFIG).unlink()


def _scheduler_folder_missing(folder):
    # model_index.json still lists the scheduler: its betas and spacing were replaced by
    # DDIM's defaults without a word.
    shutil.rmtree(folder / "scheduler")


def _a_pipe(file):
    # A pipe in a file's place: reading it would wait for ever; it was "not found" (weights).
    def damage(folder):
        (folder / file).unlink()
        os.mkfifo(folder / file)

    return damage


def _remove_weights(folder):
    (folder / WEIGHTS).unlink()


def _weights_as(suffix):
    def damage(folder):
        weights = folder / WEIGHTS
        weights.rename(weights.with_name("diffusion_pytorch_model" + suffix))

    return damage


def _noise_level_unet(folder):
    # A consistent network of another kind: Fourier features of sigma, not DDPM's timesteps.
    config = {**json.loads((folder / UNET_CONFIG).read_text()), "time_embedding_type": "fourier"}
    unet = UNet2D.init(jax.random.key(0), config)
    (folder / UNET_CONFIG).write_text(json.dumps(config))
    save_file(unet.state_dict(), str(folder / WEIGHTS))


# (damage, the file named, the field or tensor named)
CASES = {
    # unet/config.json
    "config is a list": (_config_text(UNET_CONFIG, b"[1, 2]"), UNET_CONFIG, "JSON object"),
    "config is truncated": (_config_text(UNET_CONFIG, b'{"in_channels":'), UNET_CONFIG, "JSON"),
    "config is not UTF-8": (_config_text(UNET_CONFIG, b"\xff\xfe\x00"), UNET_CONFIG, "read"),
    "in_channels a string": (
        _config_field(UNET_CONFIG, in_channels="3"),
        UNET_CONFIG,
        "in_channels",
    ),
    "out_channels negative": (
        _config_field(UNET_CONFIG, out_channels=-3),
        UNET_CONFIG,
        "out_channels",
    ),
    "block_out_channels holds a string": (
        _config_field(UNET_CONFIG, block_out_channels=[16, 16, "32"]),
        UNET_CONFIG,
        "block_out_channels",
    ),
    "norm_num_groups does not divide": (
        _config_field(UNET_CONFIG, norm_num_groups=5),
        UNET_CONFIG,
        "norm_num_groups",
    ),
    "absurd sample_size": (
        _config_field(UNET_CONFIG, sample_size=1_000_000),
        UNET_CONFIG,
        "sample_size",
    ),
    "sample_size the levels do not divide": (
        _config_field(UNET_CONFIG, sample_size=18),
        UNET_CONFIG,
        "sample_size",
    ),
    "layers_per_block 0": (
        _config_field(UNET_CONFIG, layers_per_block=0),
        UNET_CONFIG,
        "layers_per_block",
    ),
    "layers_per_block a float": (
        _config_field(UNET_CONFIG, layers_per_block=2.5),
        UNET_CONFIG,
        "layers_per_block",
    ),
    "norm_eps negative": (_config_field(UNET_CONFIG, norm_eps=-1e-6), UNET_CONFIG, "norm_eps"),
    "attention_head_dim does not divide": (
        _config_field(UNET_CONFIG, attention_head_dim=5),
        UNET_CONFIG,
        "attention_head_dim",
    ),
    "flip_sin_to_cos a string": (
        _config_field(UNET_CONFIG, flip_sin_to_cos="no"),
        UNET_CONFIG,
        "flip_sin_to_cos",
    ),
    "down_block_types a string": (
        _config_field(UNET_CONFIG, down_block_types="DownBlock2D"),
        UNET_CONFIG,
        "down_block_types",
    ),
    "time_embedding_dim absurd": (
        _config_field(UNET_CONFIG, time_embedding_dim=10**9),
        UNET_CONFIG,
        "time_embedding_dim",
    ),
    "freq_shift at half the width": (
        _config_field(UNET_CONFIG, freq_shift=8),
        UNET_CONFIG,
        "freq_shift",
    ),
    "unknown field": (
        _config_field(UNET_CONFIG, cross_attention_dim=64),
        UNET_CONFIG,
        "cross_attention_dim",
    ),
    "another model class": (
        _config_field(UNET_CONFIG, _class_name="UNet2DConditionModel"),
        UNET_CONFIG,
        "UNet2DConditionModel",
    ),
    # scheduler/scheduler_config.json
    "scheduler config is a list": (
        _config_text(SCHEDULER_CONFIG, b"[]"),
        SCHEDULER_CONFIG,
        "JSON object",
    ),
    "beta_end 5": (_config_field(SCHEDULER_CONFIG, beta_end=5.0), SCHEDULER_CONFIG, "beta_end"),
    "beta_start 0": (
        _config_field(SCHEDULER_CONFIG, beta_start=0.0),
        SCHEDULER_CONFIG,
        "beta_start",
    ),
    "num_train_timesteps absurd": (
        _config_field(SCHEDULER_CONFIG, num_train_timesteps=10**12),
        SCHEDULER_CONFIG,
        "num_train_timesteps",
    ),
    "clip_sample a string": (
        _config_field(SCHEDULER_CONFIG, clip_sample="yes"),
        SCHEDULER_CONFIG,
        "clip_sample",
    ),
    "prediction_type a list": (
        _config_field(SCHEDULER_CONFIG, prediction_type=["epsilon"]),
        SCHEDULER_CONFIG,
        "prediction_type",
    ),
    "steps_offset negative": (
        _config_field(SCHEDULER_CONFIG, steps_offset=-1),
        SCHEDULER_CONFIG,
        "steps_offset",
    ),
    "thresholding on": (
        _config_field(SCHEDULER_CONFIG, thresholding=True),
        SCHEDULER_CONFIG,
        "thresholding",
    ),
    # an OverflowError in numpy, exit 1
    "steps_offset of 31 digits": (
        _config_field(SCHEDULER_CONFIG, steps_offset=10**30),
        SCHEDULER_CONFIG,
        "steps_offset must be an integer in [0, 1000)",
    ),
    # a RecursionError in json, exit 1
    "nested too deeply": (
        _config_text(SCHEDULER_CONFIG, b"[" * 100_000 + b"]" * 100_000),
        SCHEDULER_CONFIG,
        "nested too deeply",
    ),
    # Python's "use sys.set_int_max_str_digits()", naming no file
    "an integer of 5000 digits": (
        _config_text(SCHEDULER_CONFIG, b'{"num_train_timesteps": 1' + b"0" * 5000 + b"}"),
        SCHEDULER_CONFIG,
        "not valid JSON",
    ),
    # ignored: the default options were used
    "scheduler config a folder": (_scheduler_config_folder, SCHEDULER_CONFIG, "a folder"),
    "scheduler config missing": (_scheduler_config_missing, SCHEDULER_CONFIG, "missing"),
    "scheduler folder missing": (_scheduler_folder_missing, SCHEDULER_CONFIG, "missing, but"),
    "scheduler config a pipe": (_a_pipe(SCHEDULER_CONFIG), SCHEDULER_CONFIG, "a special file"),
    "unet config a pipe": (_a_pipe(UNET_CONFIG), UNET_CONFIG, "a special file"),
    "weights a pipe": (_a_pipe(WEIGHTS), WEIGHTS, "a special file"),
    # unet/diffusion_pytorch_model.safetensors
    "a (1,) bias": (
        _set("conv_in.bias", np.zeros(1, np.float32)),
        WEIGHTS,
        "'conv_in.bias' has shape (1,)",
    ),
    "a 5x5 conv_in": (
        _set("conv_in.weight", np.zeros((16, 3, 5, 5), np.float32)),
        WEIGHTS,
        "'conv_in.weight' has shape (16, 3, 5, 5), expected (16, 3, 3, 3)",
    ),
    "a transposed linear": (
        _set("time_embedding.linear_1.weight", np.zeros((16, 64), np.float32)),
        WEIGHTS,
        "expected (64, 16)",
    ),
    "a NaN weight": (
        _poison("mid_block.resnets.0.conv1.weight", np.nan),
        WEIGHTS,
        "mid_block.resnets.0.conv1",
    ),
    "an inf weight": (_poison("conv_out.bias", np.inf), WEIGHTS, "'conv_out.bias' holds NaN"),
    "an integer tensor": (
        _set("conv_out.bias", np.zeros(3, np.int32)),
        WEIGHTS,
        "'conv_out.bias' has dtype int32",
    ),
    "a missing tensor": (
        _tensors(lambda tensors: tensors.pop("conv_norm_out.weight")),
        WEIGHTS,
        "lacks tensor 'conv_norm_out.weight'",
    ),
    "an extra tensor": (
        _set("class_embedding.weight", np.zeros((10, 64), np.float32)),
        WEIGHTS,
        "class_embedding.weight",
    ),
    "shapes are checked before values": (
        _tensors(_nan_first_and_bad_shape_last),
        WEIGHTS,
        "'conv_out.weight' has shape (3, 16, 1, 1), expected (3, 16, 3, 3)",
    ),
    "a legacy name beside the new one": (_tensors(_legacy_duplicate), WEIGHTS, "twice"),
    "a truncated file": (_weights_bytes(lambda data: data[:-100]), WEIGHTS, "safetensors"),
    "a huge header": (
        _weights_bytes(lambda data: (10**12).to_bytes(8, "little") + data[8:]),
        WEIGHTS,
        "header",
    ),
    "an empty file": (_weights_bytes(lambda data: b""), WEIGHTS, "safetensors"),
    "no weights file": (_remove_weights, WEIGHTS, "not found; download the pipeline again"),
    "weights only as .bin": (_weights_as(".bin"), WEIGHTS, "a .bin-only checkpoint"),
    # save_pretrained(variant="fp16") writes only the variant: it was called a .bin (pass 28)
    "weights only as a variant": (_weights_as(".fp16.safetensors"), WEIGHTS, 'variant="fp16"'),
    # an LDMPipeline's latents were written as the image, undecoded, exit 0 (pass 28, #2)
    "a latent-diffusion pipeline": (
        _config_field("model_index.json", _class_name="LDMPipeline", vqvae=["diffusers", "VQ"]),
        "model_index.json",
        "'LDMPipeline' pipeline; scorelab samples pixel-space DDPM pipelines",
    ),
    "a consistency-model pipeline": (
        _config_field("model_index.json", _class_name="ConsistencyModelPipeline"),
        "model_index.json",
        "diffusers.DiffusionPipeline.from_pretrained",
    ),
    "a noise-level network": (_noise_level_unet, UNET_CONFIG, "time_embedding_type 'fourier'"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_pipeline_is_refused_in_one_line_naming_the_file_and_field(case, tmp_path):
    damage, file, named = CASES[case]
    folder = _copy(tmp_path)
    damage(folder)
    with pytest.raises(PretrainedError) as refused:
        load_pipeline(folder)
    message = str(refused.value)
    assert "\n" not in message
    assert str(folder / file) in message and named in message


def test_the_corpus_is_large_and_every_case_needs_its_damage(tmp_path):
    # The undamaged copy loads: each refusal above comes from its damage.
    assert len(CASES) >= 25
    unet, _ = load_pipeline(_copy(tmp_path))
    assert dict(unet.config)["sample_size"] == 16


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(n=0), "n must be an integer >= 1"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(eta=-0.5), "eta"),
        (dict(eta=float("nan")), "eta"),
        (dict(backend="torch"), "backend"),
    ],
)
def test_bad_options_are_refused_before_the_pipeline_is_read(options, named, tmp_path):
    # The pipeline path does not exist: the options are checked first.
    with pytest.raises(PretrainedError, match=named):
        run(tmp_path / "missing", tmp_path / "grid.png", **options)


def _noise_file(tmp_path, array, name="noise.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    "init, named",
    [
        (np.zeros((2, 3, 16), np.float32), "(B, 3, H, W)"),
        (np.zeros((2, 3, 18, 18), np.float32), "multiples of 4"),
        (np.full((1, 3, 16, 16), np.nan, np.float32), "NaN"),
        (np.array(["a", "b"]), "numeric"),
    ],
)
def test_bad_init_noise_is_refused_naming_it(init, named, tmp_path):
    with pytest.raises(PretrainedError, match="init") as refused:
        run(PIPELINE, tmp_path / "grid.png", init_noise=_noise_file(tmp_path, init))
    assert named in str(refused.value) and "\n" not in str(refused.value)


def test_unreadable_or_mismatched_noise_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy")
    with pytest.raises(PretrainedError, match="--init-noise .*garbage.npy: not a readable"):
        run(PIPELINE, tmp_path / "grid.png", init_noise=garbage)
    init = _noise_file(tmp_path, np.zeros((2, 3, 16, 16), np.float32), "init.npy")
    steps = _noise_file(tmp_path, np.zeros((9, 2, 3, 16, 16), np.float32), "steps.npy")
    with pytest.raises(PretrainedError, match=r"--step-noise .*expected \(10, 2, 3, 16, 16\)"):
        run(PIPELINE, tmp_path / "g.png", num_inference_steps=10, eta=0.5, init_noise=init,
            step_noise=steps)  # fmt: skip


# --- the command line: exit status 2, one line, no traceback ------------------------------------


def _cli(*argv):
    """``scorelab pretrained ARGV`` in this process, as ``(returncode, stderr)``: a
    subprocess per case cost the suite an import of JAX and torch each (the console script's
    own path is tested in test_robustness.py)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(["pretrained", *map(str, argv)])
    return types.SimpleNamespace(returncode=status, stderr=stderr.getvalue())


@pytest.mark.parametrize(
    "case, extra, named",
    [
        ("a (1,) bias", [], "'conv_in.bias' has shape (1,), expected (16,)"),
        ("beta_end 5", [], "beta_end must be a number in (0, 1), got 5.0"),
        ("absurd sample_size", [], "sample_size"),
        (None, ["--n", "0"], "n must be an integer >= 1, got 0"),
        (None, ["--init-noise", "WRONG"], "init noise must be NCHW (B, 3, H, W)"),
        # XLA's 'Out of memory allocating 307200000000000 bytes': an internal error, exit 1
        (None, ["--n", "100000000000"], "n: needs"),
        # the attention matrix alone is 128 GiB a head: an out-of-memory line after the
        # weights were loaded (or the kernel's kill), checked now before anything is drawn
        ("4096 x 4096 images", [], "one 4096x4096 image: needs"),
        # read, then ignored: eta 0 adds no step noise
        (None, ["--step-noise", "NOISE"], "eta 0 is deterministic and adds no step noise"),
        # a file was 'neither a local folder nor in the Hugging Face cache: download it'
        ("a file", [], "a file, not a pipeline folder"),
        # the flag the user gave is named, not only the library's parameter behind it
        (None, ["--steps", "0"], "--steps: num_inference_steps must be an integer >= 1"),
        (None, ["--eta", "-1"], "--eta: eta must be a number in [0, 1]"),
        # the JAX sampler's rounding guard clamped it to finite garbage; diffusers gave NaN
        (None, ["--eta", "2"], "--eta: eta must be a number in [0, 1], got 2.0"),
        (None, ["--eta", "1e308"], "--eta: eta must be a number in [0, 1]"),
        # NumPy's "overflow encountered in cast", then "holds NaN or inf values"
        (None, ["--init-noise", "HUGE"], "values up to 1e+300 are beyond float32's range"),
        # "noise must have shape (50, 1, 3, 16, 16)", naming neither the flag nor the file
        (None, ["--eta", "1", "--step-noise", "FIVE"], "--step-noise"),
        (None, ["--clip-range", "0"], "--clip-range: clip_sample_range must be a number > 0"),
        # NumPy's "overflow encountered in cast" alone, naming neither the flag nor a remedy
        (
            None,
            ["--clip-range", "1e308"],
            "--clip-range: clip_sample_range must be a number > 0 within float32's range",
        ),  # fmt: skip
        (None, ["--steps-offset", "-3"], "--steps-offset: steps_offset must be an integer in"),
        # an OverflowError in numpy, exit 1
        (None, ["--steps-offset", str(10**30)], "--steps-offset: steps_offset must be an integer"),
        # read, then ignored: the samples were those without the flag
        (
            None,
            ["--spacing", "trailing", "--steps-offset", "3"],
            "--steps-offset: steps_offset "
            "3: only the leading timestep spacing adds it, and this schedule's is trailing",
        ),
        (
            None,
            ["--no-clip", "--clip-range", "0.5"],
            "--clip-range: clip_sample_range 0.5: x0 clipping is off",
        ),
        # ... and a value from the pipeline's own file is blamed on that file, not a flag
        ("steps_offset negative", [], "scheduler_config.json: steps_offset must be"),
    ],
)
def test_cli_refuses_with_status_2_one_line_no_traceback(case, extra, named, tmp_path):
    folder = _copy(tmp_path)
    if case == "a file":
        folder = folder / "model_index.json"
    elif case == "4096 x 4096 images":
        _config_field(UNET_CONFIG, sample_size=4096)(folder)
    elif case is not None:
        CASES[case][0](folder)
    if "WRONG" in extra:
        extra = ["--init-noise", _noise_file(tmp_path, np.zeros((1, 1, 16, 16), np.float32))]
    if "NOISE" in extra:
        extra = ["--step-noise", _noise_file(tmp_path, np.zeros((50, 1, 3, 16, 16), np.float32))]
    if "HUGE" in extra:
        extra = ["--init-noise", _noise_file(tmp_path, np.full((1, 3, 16, 16), 1e300))]
    if "FIVE" in extra:
        noise = _noise_file(tmp_path, np.zeros((5, 1, 3, 16, 16), np.float32))
        extra = ["--eta", "1", "--step-noise", noise]
        named = f"--step-noise {noise}: shape (5, 1, 3, 16, 16), expected (50, 1, 3, 16, 16)"
    result = _cli(folder, "-o", tmp_path / "grid.png", *extra)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scorelab pretrained: error: ")
    assert named in lines[0]
    assert not (tmp_path / "grid.png").exists()


def test_the_command_refuses_a_noise_level_network_as_load_pipeline_does(tmp_path):
    # `scorelab pretrained` loaded the U-Net itself, past load_pipeline's refusal, and
    # sampled it: NaN samples in a PNG, exit 0.
    folder = _copy(tmp_path)
    _noise_level_unet(folder)
    with pytest.raises(PretrainedError, match="time_embedding_type 'fourier'"):
        run(folder, tmp_path / "grid.png", num_inference_steps=2)
    assert not (tmp_path / "grid.png").exists()


def test_samples_that_are_not_finite_are_refused_not_saved(tmp_path):
    # An output layer of 1e38s overflows: a black PNG and a cast warning, exit 0.
    folder = _copy(tmp_path)
    _set("conv_out.weight", np.full((3, 16, 3, 3), 1e38, np.float32))(folder)
    with pytest.raises(PretrainedError, match="samples are not finite"):
        run(folder, tmp_path / "grid.png", num_inference_steps=2)
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.diffusers
def test_the_diffusers_backend_refuses_missing_weights_as_the_jax_backend_does(tmp_path):
    # diffusers fills a missing tensor with fresh random values (and logs two lines): NaN
    # samples, exit 0.
    folder = _copy(tmp_path)
    _tensors(lambda tensors: tensors.pop("conv_in.bias"))(folder)
    with pytest.raises(PretrainedError, match="lacks tensor 'conv_in.bias'"):
        run(folder, tmp_path / "grid.png", num_inference_steps=2, backend="diffusers")


def test_overwrite_replaces_the_outputs_and_without_it_they_are_kept(tmp_path):
    # The library's run() learned to refuse existing outputs; the command checks them itself
    # and must hand --overwrite on, or --overwrite ends in the library's refusal.
    folder = _copy(tmp_path)
    grid, array = tmp_path / "grid.png", tmp_path / "x.npy"
    grid.write_bytes(b"old")
    array.write_bytes(b"old")
    steps = ["--steps", "2", "--save-array", array]
    refused = _cli(folder, "-o", grid, *steps)
    assert refused.returncode == 2 and "exists; pass --overwrite" in refused.stderr
    assert grid.read_bytes() == b"old" and array.read_bytes() == b"old"
    replaced = _cli(folder, "-o", grid, *steps, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.load(array).shape == (1, 3, 16, 16)


def test_an_output_that_is_a_file_of_the_pipeline_is_refused(tmp_path):
    """``--save-array`` through a link to the pipeline's weights replaced them with the
    samples, exit 0 (pass 19B, #2): an output may not be a file the call reads."""
    folder = _copy(tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights.read_bytes()
    link = tmp_path / "out.npy"
    link.symlink_to(weights)
    with pytest.raises(PretrainedError, match=r"^save_array: .*out\.npy is a file of the pipeline"):
        run(folder, tmp_path / "g.png", num_inference_steps=2, save_array=link, overwrite=True)
    assert weights.read_bytes() == before


@pytest.mark.diffusers
def test_the_diffusers_backend_takes_scorelab_s_cosine_alias(tmp_path):
    """``beta_schedule = "cosine"`` (scorelab's alias of ``squaredcos_cap_v2``) sampled on the
    JAX backend and was diffusers' NotImplementedError, exit 1, on the other (pass 19B, #3)."""
    images = []
    for schedule in ("cosine", "squaredcos_cap_v2"):  # the alias, and diffusers' own name
        folder = _copy(tmp_path / schedule)
        config_file = folder / "scheduler" / "scheduler_config.json"
        config = json.loads(config_file.read_text())
        config["beta_schedule"] = schedule
        config_file.write_text(json.dumps(config))
        grid = tmp_path / f"{schedule}.png"
        images.append(run(folder, grid, num_inference_steps=2, backend="diffusers"))
    np.testing.assert_array_equal(images[0], images[1])


def test_a_sharded_checkpoint_is_named_with_the_remedy(tmp_path):
    """Weights split into shards with an index were "not found; a .bin-only checkpoint needs
    converting" (pass 19B, #5): the index is named, and how to merge the shards."""
    folder = _copy(tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    names = sorted(tensors)
    shards = {}
    for i, part in enumerate((names[::2], names[1::2]), start=1):
        shard = f"diffusion_pytorch_model-0000{i}-of-00002.safetensors"
        save_file({name: tensors[name] for name in part}, folder / "unet" / shard)
        shards.update(dict.fromkeys(part, shard))
    weights.unlink()
    index = folder / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": shards}))
    with pytest.raises(PretrainedError, match=r"index\.json: a sharded checkpoint; .*merge it"):
        run(folder, tmp_path / "g.png", num_inference_steps=2)


def test_bfloat16_weights_are_read_as_their_float32_values(tmp_path):
    """A bfloat16 checkpoint, which diffusers loads, was refused (pass 19B, #6): it samples
    as the same weights stored in float32."""
    import ml_dtypes

    images = []
    for name, dtype in (("bf16", ml_dtypes.bfloat16), ("f32", np.float32)):
        folder = _copy(tmp_path / name)
        weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
        tensors = {
            k: v.astype(ml_dtypes.bfloat16).astype(dtype) for k, v in load_file(weights).items()
        }
        save_file(tensors, weights)
        images.append(run(folder, tmp_path / f"{name}.png", num_inference_steps=2))
    np.testing.assert_array_equal(images[0], images[1])

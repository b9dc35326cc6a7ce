"""scorelab pretrained: folder and offline-cache resolution, sampling the fixture against
diffusers' goldens (no torch), the CLI, and live parity with DDIMPipeline (marked
``diffusers``)."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from matplotlib.image import imread

from scorelab.cli import main
from scorelab.diffusers import (
    PretrainedError,
    SchedulerConfig,
    load_pipeline,
    load_scheduler_config,
    resolve_pipeline,
    sample,
    to_images,
)

FIXTURES = Path(__file__).parent / "fixtures"
PIPELINE, GOLDEN = FIXTURES / "tiny_ddpm", FIXTURES / "tiny_ddpm_golden"


def _golden(name):
    return np.load(GOLDEN / f"{name}.npy")


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_cache(root, refs_main=COMMIT):
    """The hub cache layout hf download leaves: refs/main names the snapshot."""
    repo = root / "hub" / "models--google--tiny-ddpm"
    shutil.copytree(PIPELINE, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(refs_main)
    return root / "hub", repo / "snapshots" / COMMIT


def test_local_folder_and_offline_hub_cache_resolve(tmp_path):
    assert resolve_pipeline(PIPELINE) == PIPELINE
    cache, snapshot = _fake_cache(tmp_path)
    assert resolve_pipeline("google/tiny-ddpm", cache_dir=cache) == snapshot
    with pytest.raises(PretrainedError, match="hf download google/other"):
        resolve_pipeline("google/other", cache_dir=cache)


def test_hub_cache_default_is_huggingface_hubs(tmp_path, monkeypatch):
    # No cache_dir: huggingface_hub's own location ($HF_HUB_CACHE, read when it is imported).
    import huggingface_hub.constants

    cache, snapshot = _fake_cache(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert resolve_pipeline("google/tiny-ddpm") == snapshot


def test_a_ref_pointing_out_of_the_cache_loads_nothing(tmp_path):
    # refs/main = ../../.. names hub/models--google--tiny-ddpm/snapshots/../../.., the folder
    # holding the cache, where a pipeline lies: it must not be found.
    cache, _ = _fake_cache(tmp_path / "outside", refs_main="../../..")
    shutil.copytree(PIPELINE, tmp_path / "outside", dirs_exist_ok=True)
    assert (
        cache / "models--google--tiny-ddpm" / "snapshots" / "../../.." / "model_index.json"
    ).is_file()
    with pytest.raises(PretrainedError, match="neither a local folder nor in the Hugging Face"):
        resolve_pipeline("google/tiny-ddpm", cache_dir=cache)
    # Nor does a snapshot that is a symlink out of the cache.
    snapshots = cache / "models--google--tiny-ddpm" / "snapshots"
    shutil.rmtree(snapshots / COMMIT)
    (snapshots / COMMIT).symlink_to(tmp_path / "outside", target_is_directory=True)
    (cache / "models--google--tiny-ddpm" / "refs" / "main").write_text(COMMIT)
    with pytest.raises(PretrainedError, match="neither a local folder nor in the Hugging Face"):
        resolve_pipeline("google/tiny-ddpm", cache_dir=cache)


def test_pipeline_scheduler_config_and_bare_model_defaults(tmp_path):
    unet, config = load_pipeline(PIPELINE)
    assert config == SchedulerConfig()  # the fixture saves diffusers' DDIMScheduler defaults
    assert dict(unet.config)["sample_size"] == 16
    assert load_scheduler_config(PIPELINE / "unet") == SchedulerConfig()


@pytest.mark.parametrize("eta, golden", [(0.0, "ddim_eta0"), (1.0, "ddim_eta1")])
def test_sample_matches_diffusers_golden(eta, golden):
    # 10 DDIM steps of the fixture from the same injected noise as diffusers' run.
    unet, config = load_pipeline(PIPELINE)
    x = sample(
        unet,
        config,
        jax.random.key(0),
        num_inference_steps=10,
        eta=eta,
        x_T=_golden("x_T"),
        step_noise=_golden("step_noise") if eta > 0 else None,  # eta 0 adds none: refused
    )
    np.testing.assert_allclose(x, _golden(golden), rtol=0, atol=1e-3)


def test_to_images_is_pixel_exact():
    x = np.array([-1.0, -0.5, 0.0, 1.0, 3.0], np.float32).reshape(1, 1, 1, 5)
    np.testing.assert_array_equal(to_images(x)[0, 0, :, 0], [0, 64, 128, 255, 255])


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((4, 4)),
        np.full((1, 3, 4, 4), np.nan),
        np.zeros((1, 1, 2, 2), complex),
        np.zeros((2, 8, 8, 3)),  # channels last: was taken for 8-channel 8x3 images
    ],
    ids=["2-d", "nan", "complex", "channels-last"],
)
def test_to_images_refuses(x):
    with pytest.raises(ValueError, match="^x: "):
        to_images(x)
    huge = np.full((1, 1, 2, 2), 1e300)  # clipped, not overflowed to inf with a cast warning
    np.testing.assert_array_equal(to_images(huge), np.full((1, 2, 2, 1), 255))


def test_cli_writes_grid_and_array_matching_the_golden(tmp_path, capsys):
    init, noise = tmp_path / "x_T.npy", tmp_path / "noise.npy"
    np.save(init, _golden("x_T"))
    np.save(noise, _golden("step_noise"))
    out, grid = tmp_path / "out.npy", tmp_path / "grid.png"
    argv = ["pretrained", str(PIPELINE), "--steps", "10", "--eta", "1", "--seed", "0"]
    argv += ["--init-noise", str(init), "--step-noise", str(noise)]
    assert main([*argv, "--save-array", str(out), "-o", str(grid)]) == 0
    assert capsys.readouterr().out.strip() == str(grid)
    x = np.load(out)
    np.testing.assert_allclose(x, _golden("ddim_eta1"), rtol=0, atol=1e-3)
    pixels = np.round(imread(grid)[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels, np.concatenate(list(to_images(x)), axis=1))


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 1, 16, 16), np.float32))
    assert main(["pretrained", str(PIPELINE), "--init-noise", str(bad)]) == 2
    assert "init noise must be NCHW (B, 3, H, W)" in capsys.readouterr().err
    assert main(["pretrained", str(PIPELINE), "--steps", "1001"]) == 2
    assert "num_inference_steps" in capsys.readouterr().err
    assert main(["pretrained", str(tmp_path / "missing")]) == 2
    assert "`hf download" in capsys.readouterr().err


# --- live parity with diffusers -------------------------------------------------------------


def _torch_and_diffusers():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.set_num_threads(1)
    return torch, diffusers


@pytest.mark.diffusers
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sample_matches_ddim_pipeline(eta):
    # DDIMPipeline draws x_T, then one step noise per step, from one generator: replay it.
    torch, diffusers = _torch_and_diffusers()
    pipeline = diffusers.DDIMPipeline.from_pretrained(PIPELINE, low_cpu_mem_usage=False)
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(
        batch_size=2,
        generator=torch.Generator().manual_seed(3),
        eta=eta,
        num_inference_steps=10,
        output_type="np",
    ).images
    generator = torch.Generator().manual_seed(3)
    x_T = torch.randn((2, 3, 16, 16), generator=generator).numpy()
    noise = np.stack([torch.randn((2, 3, 16, 16), generator=generator).numpy() for _ in range(10)])
    unet, config = load_pipeline(PIPELINE)
    x = sample(
        unet,
        config,
        jax.random.key(0),
        num_inference_steps=10,
        eta=eta,
        x_T=x_T,
        step_noise=noise if eta > 0 else None,
    )
    images = np.clip(np.asarray(x) / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(images, expected, rtol=0, atol=5e-4)


@pytest.mark.diffusers
def test_cli_backends_agree_from_injected_noise(tmp_path):
    _torch_and_diffusers()
    init, noise = tmp_path / "x_T.npy", tmp_path / "noise.npy"
    np.save(init, _golden("x_T"))
    np.save(noise, _golden("step_noise"))
    common = ["pretrained", str(PIPELINE), "--steps", "10", "--eta", "0.5", "--spacing", "trailing"]
    common += ["--no-clip", "--init-noise", str(init), "--step-noise", str(noise)]
    arrays = {}
    for backend in ("jax", "diffusers"):
        out = tmp_path / f"{backend}.npy"
        argv = [*common, "--backend", backend, "--save-array", str(out)]
        assert main([*argv, "-o", str(tmp_path / f"{backend}.png")]) == 0
        arrays[backend] = np.load(out)
    scale = np.abs(arrays["diffusers"]).max()
    np.testing.assert_allclose(arrays["jax"], arrays["diffusers"], rtol=0, atol=1e-5 * scale)

"""Dropout and class conditioning of the trainable U-Net: inverted dropout's mean and variance
in a residual block, evaluation without dropout, the training keys and labels, the
class-conditional VP epsilon loss against its closed form, classifier-free guidance, the
configuration, sampling by class and the export; live parity with diffusers' ``UNet2DModel``
(marked ``diffusers``)."""

import json
import math
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import Array
from jax.tree_util import Partial

from scorelab.cli import main
from scorelab.config import ConfigError, ExperimentConfig
from scorelab.diffusers import ClassConditioned, UNet2D, VPEpsilonUNet, export_pipeline, load_unet
from scorelab.diffusers._unet import _Conv
from scorelab.losses import dsm_loss, vp_epsilon_loss
from scorelab.noise import vp_alphas_cumprod
from scorelab.training import TrainConfig, train

SHAPE = (1, 8, 8)
OPTIONS = {"channels": (8, 16), "norm_groups": 4, "attention_resolutions": ()}


@eqx.filter_jit
def _call(model, x, sigma, class_label=None, key=None):
    return model(x, sigma, class_label, key=key)


@pytest.fixture(scope="module")
def conditional():
    return VPEpsilonUNet(
        jax.random.key(0), SHAPE, num_classes=3, null_class=True, dropout=0.3, **OPTIONS
    )


# --- dropout ------------------------------------------------------------------------------------


@pytest.mark.slow  # compiles three U-Nets
def test_dropout_zero_and_evaluation_are_bit_identical_to_the_network_without_dropout():
    # The weights do not depend on the rate (init draws tensors by name); p = 0 with or without
    # a key, and any p without a key (evaluation), compute today's network exactly.
    plain = VPEpsilonUNet(jax.random.key(1), SHAPE, **OPTIONS)
    x = jax.random.normal(jax.random.key(2), SHAPE)
    expected = _call(plain, x, 0.7)
    zero = VPEpsilonUNet(jax.random.key(1), SHAPE, dropout=0.0, **OPTIONS)
    dropped = VPEpsilonUNet(jax.random.key(1), SHAPE, dropout=0.5, **OPTIONS)
    assert zero.dropout == 0 and dropped.dropout == 0.5
    np.testing.assert_array_equal(_call(zero, x, 0.7, key=jax.random.key(3)), expected)
    np.testing.assert_array_equal(_call(dropped, x, 0.7), expected)
    assert not np.array_equal(_call(dropped, x, 0.7, key=jax.random.key(3)), expected)


def test_inverted_dropout_in_a_residual_block_is_unbiased_with_its_closed_form_variance():
    # The block's output is affine in the dropped activation h: o = (shortcut + conv2(m h /
    # (1 - p))) / s with m ~ Bernoulli(1 - p) per entry, so E o = the evaluation output exactly
    # and Var o = conv2_{w^2}(h^2) p / (1 - p) / s^2 (independent masks). Means to 5 standard
    # errors per entry (Bonferroni over the entries: a false alarm below 1e-3); the mean
    # variance ratio to 5 times a single entry's standard error sqrt(2 / (K - 1)).
    p, k_draws = 0.3, 2000
    unet = UNet2D.init(jax.random.key(0), {**_config(), "dropout": p})
    block = unet.down_blocks[0].resnets[0]
    x = jax.random.normal(jax.random.key(1), (1, 8, 8, 8))
    emb = jax.random.normal(jax.random.key(2), (1, block.time_emb_proj.weight.shape[0]))
    expected = block(x, emb)
    keys = jax.random.split(jax.random.key(3), k_draws)
    draws = jax.jit(jax.vmap(lambda k: block(x, emb, k)))(keys)
    mean, std = draws.mean(0), draws.std(0, ddof=1)
    assert np.all(np.abs(mean - expected) <= 5 * std / math.sqrt(k_draws))
    h = jax.nn.silu(block.norm2(block.conv1(jax.nn.silu(block.norm1(x))) + _emb(block, emb)))
    squared = _Conv(block.conv2.weight**2, jnp.zeros_like(block.conv2.bias), 1, block.conv2.padding)
    variance = squared(h**2) * p / (1 - p) / block.output_scale_factor**2
    ratio = float(np.mean(std**2 / variance))
    assert abs(ratio - 1) < 5 * math.sqrt(2 / (k_draws - 1)), ratio


def _config(**extra):
    from scorelab.diffusers import unet_config

    return unet_config(SHAPE, **OPTIONS, **extra)


def _emb(block, emb):
    return block.time_emb_proj(jax.nn.silu(emb))[:, None, None, :]


# --- training keys and labels -------------------------------------------------------------------


class _Dropped(eqx.Module):
    """A linear score with inverted dropout on its output: the training protocol's model."""

    weight: Array
    dropout: float = eqx.field(static=True)

    def __call__(self, x, sigma, class_label=None, *, key=None):
        out = -self.weight * x / (1 + sigma**2)
        if key is not None:
            keep = jax.random.bernoulli(key, 1 - self.dropout, x.shape)
            out = jnp.where(keep, out / (1 - self.dropout), 0.0)
        return out


def _first_loss(model, data, labels, loss_fn, batch):
    # train's documented draw of step 0: fold_in(key, 0) -> (batch key, loss key); with
    # dropout the loss key -> (loss key, dropout key); example b: fold_in(., b)
    batch_key, loss_key = jax.random.split(jax.random.fold_in(jax.random.key(0), 0))
    loss_key, dropout_key = jax.random.split(loss_key)
    indices = jax.random.randint(batch_key, (batch,), 0, data.shape[0])
    values = [
        loss_fn(
            jax.random.fold_in(loss_key, b),
            Partial(model, key=jax.random.fold_in(dropout_key, b)),
            data[indices[b]],
            labels[indices[b]],
        )
        for b in range(batch)
    ]
    return float(np.mean(values))


def test_training_draws_dropout_keys_and_labels_per_example_as_documented():
    data = jax.random.normal(jax.random.key(1), (40, 3))
    labels = jnp.arange(40) % 4
    config = TrainConfig(steps=2, batch_size=8, steps_per_dispatch=2, learning_rate=1e-2)

    def loss_fn(key, score_fn, x, label):
        return dsm_loss(key, score_fn, x + label, sigma=0.5)

    model = _Dropped(jnp.ones(3), 0.4)
    result = train(jax.random.key(0), model, loss_fn, data, config, progress=False, labels=labels)
    assert result.losses[0] == pytest.approx(_first_loss(model, data, labels, loss_fn, 8), 1e-5)
    again = train(jax.random.key(0), model, loss_fn, data, config, progress=False, labels=labels)
    np.testing.assert_array_equal(result.losses, again.losses)
    # without dropout the model is never given a key (it would apply none anyway)
    plain = train(jax.random.key(0), _Dropped(jnp.ones(3), 0.0), loss_fn, data, config,
                  progress=False, labels=labels)  # fmt: skip
    assert not np.array_equal(plain.losses, result.losses)


def test_training_refuses_labels_that_do_not_fit_the_data():
    from scorelab.data import DataError

    data = np.zeros((10, 2), np.float32)
    for labels in (np.zeros(9, int), np.full(10, -1), np.zeros(10)):
        with pytest.raises(DataError, match="labels: expected 10 integers >= 0"):
            train(jax.random.key(0), _Dropped(jnp.ones(2), 0.0), None, data, TrainConfig(),
                  labels=labels, progress=False)  # fmt: skip


# --- the class-conditional loss -----------------------------------------------------------------


def _class_score(means, s, c=1.0):
    # the exact VE score of N(m_y, s^2 I) given y (times c); labels past the means: score 0
    def score_fn(x, sigma, y):
        m = jnp.asarray(means)[jnp.minimum(y, len(means) - 1)]
        exact = -c * (x - m) / (s**2 + sigma**2)
        return jnp.where(y < len(means), exact, 0.0)

    return score_fn


@pytest.mark.slow  # about 13 s of a worker: kept out of the default suite's 15 minutes
def test_conditional_vp_epsilon_loss_at_the_conditional_optimum_is_its_closed_form():
    # x_0 | y ~ N(m_y, s^2 I): eps* = E[eps | x_t, y] is the conditional exact score's, and the
    # loss there is (1/T) sum_t abar_t s^2 / (abar_t s^2 + 1 - abar_t), whatever the means; the
    # same model given shuffled labels is off by sigma^2 |m_y - m_y'|^2 / ((s^2 + sigma^2) d)
    # per level. Each to 4 standard errors.
    s, n, d, T = 0.5, 20_000, 4, 100
    means = np.array([[-2.0] * d, [0.0] * d, [2.0] * d], np.float32)
    labels = jax.random.randint(jax.random.key(2), (n,), 0, 3)
    x_0 = means[np.asarray(labels)] + s * jax.random.normal(jax.random.key(1), (n, d))
    keys = jax.random.split(jax.random.key(0), n)

    def losses(y, **extra):
        return jax.vmap(
            lambda k, x, y: vp_epsilon_loss(
                k, _class_score(means, s), x, y, num_train_timesteps=T, **extra
            )
        )(keys, x_0, y)

    abar = vp_alphas_cumprod(num_train_timesteps=T).astype(np.float64)
    expected = np.mean(abar * s**2 / (abar * s**2 + 1 - abar))
    values = losses(labels)
    assert abs(np.mean(values) - expected) < 4 * np.std(values) / math.sqrt(n)
    shuffled = losses(jnp.roll(labels, 1))
    assert abs(np.mean(shuffled) - expected) > 4 * np.std(shuffled) / math.sqrt(n)
    # label dropout p: the null label (here a score of 0, loss E|eps|^2 / d = 1) with
    # probability p, so the expected loss is (1 - p) L* + p
    p = 0.25
    dropped = losses(labels, label_dropout=p, null_label=3)
    standard_error = np.std(dropped) / math.sqrt(n)
    assert abs(np.mean(dropped) - ((1 - p) * expected + p)) < 4 * standard_error


def test_label_dropout_needs_labels():
    with pytest.raises(ValueError, match="label_dropout: drops class labels"):
        vp_epsilon_loss(jax.random.key(0), lambda x, s: x, jnp.zeros(2), label_dropout=0.1)
    with pytest.raises(ValueError, match=r"label_dropout: expected a number in \[0, 1\)"):
        vp_epsilon_loss(jax.random.key(0), lambda x, s: x, jnp.zeros(2), label_dropout=1.0)


# --- guidance -----------------------------------------------------------------------------------


@pytest.mark.slow  # about 13 s of a worker: kept out of the default suite's 15 minutes
def test_classifier_free_guidance_is_the_weighted_difference_of_scores(conditional):
    x = jax.random.normal(jax.random.key(4), SHAPE)
    scores = jax.vmap(lambda y: _call(conditional, x, 0.8, y))(jnp.arange(4))
    guided = eqx.filter_jit(lambda m: m(x, 0.8))(ClassConditioned(conditional, 2, guidance=1.5))
    np.testing.assert_allclose(guided, 2.5 * scores[2] - 1.5 * scores[3], atol=1e-5)
    assert not np.allclose(scores[0], scores[2])  # the label matters


def test_class_conditioning_refuses_what_the_model_cannot_do(conditional):
    plain = VPEpsilonUNet(jax.random.key(0), SHAPE, **OPTIONS)
    no_null = VPEpsilonUNet(jax.random.key(0), SHAPE, num_classes=3, **OPTIONS)
    for model, label, guidance, message in [
        (plain, 0, 0.0, "the model is unconditional"),
        (conditional, 3, 0.0, r"--class: 3 is not a class of this model; choose one in \[0, 3\)"),
        (conditional, 0, -1.0, "--guidance: expected a finite number >= 0"),
        (conditional, 0, float("inf"), "--guidance: expected a finite number >= 0"),
        (no_null, 0, 1.0, "--guidance: the model has no null label"),
    ]:
        with pytest.raises(ValueError, match=message):
            ClassConditioned(model, label, guidance)
    with pytest.raises(ValueError, match="null_class: a null label needs"):
        VPEpsilonUNet(jax.random.key(0), SHAPE, null_class=True, **OPTIONS)


# --- configuration, runs, sampling and export ---------------------------------------------------

UNET = {"model": {"name": "unet", "channels": [8, 16], "norm_groups": 4}}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": {"dropout": 1.0}}, r"model.dropout: expected a number in \[0, 1\)"),
        ({"model": {"num_classes": 1}}, "model.num_classes"),
        ({"model": {"dropout": 0.1}}, "model.dropout: applies to model.name"),
        ({"model": {"name": "ncsn_mlp", "num_classes": 10}}, "model.num_classes: applies to"),
        ({"loss": {"name": "vp_epsilon", "label_dropout": 0.1}, **UNET}, "loss.label_dropout"),
    ],
)
def test_config_errors_name_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(values)


def _experiment(**model):
    return ExperimentConfig.from_dict(
        {
            "data": {"source": "digits"},
            "model": {**UNET["model"], **model},
            "loss": {"name": "vp_epsilon"},
            "train": {"steps": 1, "batch_size": 8, "steps_per_dispatch": 1},
            "sampler": {"name": "ddim", "n_levels": 3},
        }
    )


def test_a_class_conditional_run_needs_labels_that_fit(tmp_path):
    from scorelab.workflows import train_run

    np.save(tmp_path / "images.npy", np.zeros((12, 1, 8, 8), np.float32))
    unlabelled = ExperimentConfig.from_dict(
        {**_experiment(num_classes=10).to_dict(), "data": {"source": str(tmp_path / "images.npy")}}
    )
    with pytest.raises(ConfigError, match="model.num_classes: the data have no class labels"):
        train_run(unlabelled, tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="labels go up to 9; set num_classes >= 10"):
        train_run(_experiment(num_classes=5), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sparse_labels_are_told_to_be_renumbered(tmp_path):
    """Labels 3, 7, 100 were told "set num_classes >= 101", which trained 98 classes without
    an example (pass 25, #4); the remedy names the renumbering first."""
    from scorelab.workflows import train_run

    np.savez(tmp_path / "images.npz", x=np.zeros((12, 1, 8, 8), np.float32),
             y=np.array([3, 7, 100] * 4))  # fmt: skip
    values = _experiment(num_classes=10).to_dict()
    values["data"] = {"source": str(tmp_path / "images.npz"), "array": "x", "labels": "y"}
    remedy = "renumber the 3 distinct labels 0..2 and set num_classes = 3, or set num_classes >= "
    with pytest.raises(ConfigError, match=re.escape(remedy)):
        train_run(ExperimentConfig.from_dict(values), tmp_path / "a", progress=False)


@pytest.mark.slow  # about 12 s of a worker: kept out of the default suite's 15 minutes
def test_sampling_draws_the_trained_classes_and_warns_of_an_untrained_one(tmp_path):
    """A run of num_classes 5 trained on labels 1 and 3 drew all five classes by default, and
    a class without a training image silently (pass 25, #4 and #5: a million classes for two
    labels ran for minutes). It draws the trained classes, and warns of another."""
    from scorelab.workflows import sample_run

    np.savez(tmp_path / "images.npz", x=np.zeros((12, 1, 8, 8), np.float32),
             y=np.array([1, 3] * 6))  # fmt: skip
    values = _experiment(num_classes=5).to_dict()
    values["data"] = {"source": str(tmp_path / "images.npz"), "array": "x", "labels": "y"}
    values["sampler"] = {"name": "ddim", "n_levels": 2}
    config = ExperimentConfig.from_dict(values)
    model = VPEpsilonUNet(jax.random.key(0), SHAPE, num_classes=5, **OPTIONS)
    assert sample_run(config, model, 1, 0).labels.tolist() == [1, 3]
    with pytest.warns(UserWarning, match=r"no example of class 2 \(they hold 1, 3\)"):
        assert sample_run(config, model, 1, 0, classes=[2]).labels.tolist() == [2]


def test_labels_asked_for_without_a_class_conditional_model_are_refused(tmp_path):
    """``data.labels`` without ``model.num_classes`` read the labels, then trained an
    unconditional model that ``--class`` refused (pass 18, #3). A folder's class sub-folders
    are labels nobody asked for: an unconditional model of them is still trained."""
    from scorelab.workflows import train_run

    pixels = np.zeros((12, 1, 8, 8), np.float32)
    np.savez(tmp_path / "images.npz", images=pixels, labels=np.arange(12) % 3)
    values = _experiment().to_dict()
    values["data"] = {"source": str(tmp_path / "images.npz"), "array": "images", "labels": "labels"}
    message = r"^data\.labels: the labels are read but the model is not class-conditional; set "
    with pytest.raises(ConfigError, match=message + r"model\.num_classes = 3"):
        train_run(ExperimentConfig.from_dict(values), tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    # The default network (an MLP) takes no classes: the remedy names the U-Net, whose
    # configuration then builds (num_classes alone was refused in turn, pass 24).
    del values["model"], values["loss"]
    remedy = 'model.name = "unet", loss.name = "vp_epsilon" and model.num_classes = 3'
    with pytest.raises(ConfigError, match=message + re.escape(remedy)):
        train_run(ExperimentConfig.from_dict(values), tmp_path / "a", progress=False)
    values["model"] = {"name": "unet", "num_classes": 3}
    values["loss"] = {"name": "vp_epsilon"}
    ExperimentConfig.from_dict(values)


@pytest.mark.slow  # samples a U-Net per class
def test_sample_by_class_rows_labelled_and_independent_of_the_other_classes(tmp_path, capsys):
    from scorelab._files import write_json
    from scorelab.checkpoints import save_model

    config = _experiment(num_classes=10)
    kwargs = {"image_shape": list(SHAPE), "channels": [8, 16], "norm_groups": 4,
              "num_classes": 10}  # fmt: skip
    model = VPEpsilonUNet(jax.random.key(0), **kwargs)
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "model", model, **kwargs)
    write_json(run / "config.json", config.to_dict())
    base = ["sample", "--run", str(run), "--n", "2"]
    assert main([*base, "--class", "3,7", "--out", str(tmp_path / "a.npy"),
                 "--grid-png", str(tmp_path / "a.png")]) == 0  # fmt: skip
    assert "4 samples (2 per class, classes 3, 7 in turn)" in capsys.readouterr().out
    assert main([*base, "--class", "7", "--out", str(tmp_path / "b.npy")]) == 0
    both, seven = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert both.shape == (4, *SHAPE)
    np.testing.assert_allclose(both[2:], seven, atol=1e-5)
    assert not np.allclose(both[:2], seven, atol=1e-3)
    assert (tmp_path / "a.png").is_file()
    assert main([*base, "--class", "10", "--out", str(tmp_path / "c.npy")]) == 2
    assert "--class: 10 is not a class" in capsys.readouterr().err
    assert main([*base, "--guidance", "1", "--out", str(tmp_path / "d.npy")]) == 2
    assert "--guidance: the model has no null label" in capsys.readouterr().err


def test_conditional_export_carries_class_embeds_and_dropout(conditional, tmp_path, capsys):
    folder = export_pipeline(conditional, tmp_path / "pipeline")
    config = json.loads((folder / "unet" / "config.json").read_text())
    assert config["num_class_embeds"] == 4 and config["dropout"] == 0.3
    unet = load_unet(folder)
    leaves = zip(jax.tree.leaves(unet), jax.tree.leaves(conditional.network.unet))
    assert all(np.array_equal(a, b) for a, b in leaves)
    # DDIMPipeline passes no class: scorelab pretrained says so instead of failing in the net.
    assert main(["pretrained", str(folder), "--out", str(tmp_path / "g.png")]) == 2
    assert "a class-conditional U-Net (num_class_embeds 4)" in capsys.readouterr().err


@pytest.mark.diffusers
def test_exported_conditional_unet_loads_in_diffusers_with_equal_output(conditional, tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    folder = export_pipeline(conditional, tmp_path / "pipeline")
    reference = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    assert reference.config.num_class_embeds == 4 and reference.config.dropout == 0.3
    x = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)
    labels = np.array([0, 1, 2, 3])  # 3: the null label
    for t in (0, 400, 999):
        with torch.no_grad():
            expected = reference(torch.from_numpy(x), t, torch.from_numpy(labels)).sample
        got = conditional.network.unet(jnp.asarray(x), t, jnp.asarray(labels))
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-3)


def test_grid_rows_are_labelled_by_class(tmp_path):
    import PIL.Image

    from scorelab.viz import save_image_grid
    from scorelab.workflows import save_sample_grid

    samples = np.zeros((6, 1, 8, 8), np.float32)
    with PIL.Image.open(save_sample_grid(samples, tmp_path / "plain.png")) as plain:
        assert plain.size == (96, 64)  # two rows of three 32-pixel images
    labelled = save_sample_grid(samples, tmp_path / "rows.png", labels=np.array([3, 3, 3, 7, 7, 7]))
    with PIL.Image.open(labelled) as image:
        picture = np.asarray(image)
    # the same rows, right of a strip holding their labels in white
    assert picture.shape[0] == 64 and picture.shape[1] > 96
    strip = picture[:, : picture.shape[1] - 96]
    assert strip[:32].max() > 200 and strip[32:].max() > 200  # text (anti-aliased) in each
    with pytest.raises(ValueError, match="row_labels: expected 2"):
        save_image_grid(np.zeros((6, 8, 8)), tmp_path / "x.png", ncols=3, row_labels=["a"])


@pytest.mark.slow  # samples a class-conditional U-Net to its overflow: half a minute
def test_a_guidance_that_overflows_is_named_as_the_cause(tmp_path, capsys):
    # --guidance has no upper bound of its own (how large a weight a model bears depends on it),
    # but chains it sends to inf were blamed on the step size: "take smaller steps".
    from scorelab._files import write_json
    from scorelab.checkpoints import save_model

    config = _experiment(num_classes=10)
    kwargs = {"image_shape": list(SHAPE), "channels": [8, 16], "norm_groups": 4,
              "num_classes": 10, "null_class": True}  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "model", VPEpsilonUNet(jax.random.key(0), **kwargs), **kwargs)
    write_json(run / "config.json", config.to_dict())
    argv = [
        "sample",
        "--run",
        str(run),
        "--n",
        "2",
        "--class",
        "1",
        "--out",
        str(tmp_path / "x.npy"),
    ]
    assert main([*argv, "--guidance", "3e38"]) == 2
    err = capsys.readouterr().err
    assert "ended non-finite" in err and "try a smaller --guidance (w = 3e+38)" in err
    assert main([*argv, "--guidance", "2"]) == 0

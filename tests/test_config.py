"""Experiment configuration: what ``auto`` resolves to, and validation of the model section."""

import dataclasses
import re

import equinox as eqx
import numpy as np
import pytest

from scorelab import builders, workflows
from scorelab.builders import make_model
from scorelab.config import (
    IMAGE_RECIPE,
    TRAIN_RECIPE,
    ConfigError,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    SamplerConfig,
    apply_overrides,
    load_config,
)
from scorelab.noise import RHO_GRIDS


@pytest.mark.parametrize(
    "loss, network, activation",
    [
        ("hyvarinen", "MLP", "silu"),
        ("hutchinson", "MLP", "silu"),
        ("sliced", "MLP", "silu"),
        ("dsm", "MLP", "leaky_relu"),
        ("ncsn", "NoiseConditionalMLP", "leaky_relu"),
    ],
)
def test_auto_model_and_activation_follow_the_loss(loss, network, activation):
    config = ExperimentConfig.from_dict({"loss": {"name": loss}})
    model, kwargs = make_model(config.model, config.loss, np.ones((4, 2)) * np.arange(4)[:, None])
    assert type(model).__name__ == network
    assert kwargs["activation"] == activation == model.activation


def test_an_explicit_activation_wins_and_unknown_ones_are_rejected():
    config = ExperimentConfig.from_dict(
        {"loss": {"name": "hyvarinen"}, "model": {"activation": "leaky_relu"}}
    )
    model, _ = make_model(config.model, config.loss, np.eye(2))
    assert model.activation == "leaky_relu"
    with pytest.raises(ConfigError, match="model.activation: unknown value 'relu6'"):
        ExperimentConfig.from_dict({"model": {"activation": "relu6"}})


def test_the_unet_trains_with_the_image_recipe_unless_the_config_says_otherwise():
    """``[train]`` fields not given come from ``IMAGE_RECIPE`` for the U-Net and from
    ``TRAIN_RECIPE`` for every other network; a given field replaces only itself."""
    image = {"data": {"source": "digits"}, "loss": {"name": "vp_epsilon"}}
    unet = ExperimentConfig.from_dict({**image, "model": {"name": "unet"}})
    assert unet.train == IMAGE_RECIPE
    changed = ExperimentConfig.from_dict(
        {**image, "model": {"name": "unet"}, "train": {"steps": 7}}
    )
    assert changed.train == dataclasses.replace(IMAGE_RECIPE, steps=7)
    assert ExperimentConfig.from_dict({}).train == TRAIN_RECIPE
    assert ExperimentConfig.from_dict(unet.to_dict()) == unet


# A value other than the default for every field of the loss and model sections, valid where
# the field is read; a new field must be added here, and is then checked below.
_LOSS_OTHER = {
    "sigma": 2.0,
    "sigma_min": 0.05,
    "sigma_max": 40.0,
    "n_sigmas": 3,
    "sigma_distribution": "lognormal",
    "p_mean": -1.0,
    "p_std": 1.0,
    "weighting": "edm",
    "n_probes": 2,
    "probe": "gaussian",
    "variance_reduction": True,
    "schedule": "squaredcos_cap_v2",
    "num_train_timesteps": 500,
    "beta_start": 2e-4,
    "beta_end": 0.03,
    "label_dropout": 0.1,
}
_MODEL_OTHER = {
    "scale_by_sigma": False,
    "normalise_input": False,
    "activation": "tanh",
    "widths": (16, 24, 8),
    "noise_embedding": "positional",
    "channels": (8, 16),
    "layers_per_block": 2,
    "attention_resolutions": (4,),
    "norm_groups": 4,
    "attention_head_dim": 4,
    "dropout": 0.1,
    "num_classes": 10,
}
_LOSS_BASES = [{"name": name} for name in builders.LOSS_FIELDS] + [
    {"name": "ncsn", "sigma_distribution": "lognormal"},
    {"name": "vp_epsilon", "schedule": "squaredcos_cap_v2"},  # betas were ignored silently
]


def test_every_field_of_the_loss_and_model_sections_is_covered_below():
    """A field added to a section without a value here would escape the two tests below."""
    assert set(_LOSS_OTHER) == {f.name for f in dataclasses.fields(LossConfig)} - {"name"}
    skip = {"name", "preconditioning", "seed"}
    assert set(_MODEL_OTHER) == {f.name for f in dataclasses.fields(ModelConfig)} - skip


@pytest.mark.parametrize(
    ("base", "field"),
    [(base, field) for base in _LOSS_BASES for field in sorted(_LOSS_OTHER) if field not in base],
    ids=lambda value: "-".join(value.values()) if isinstance(value, dict) else value,
)
def test_a_loss_field_is_accepted_exactly_where_the_loss_is_built_from_it(base, field):
    """The loss is built from the fields :func:`scorelab.builders.loss_fields` names, and only
    those: each is accepted at another value and changes the loss built; every other field
    is refused, naming it (last session a field read by the builder was refused)."""
    # label_dropout drops the labels of a class-conditional network.
    model = {"name": "unet", "num_classes": 10} if base["name"] == "vp_epsilon" else {}

    def built(loss):
        config = ExperimentConfig.from_dict({"data": {"source": "digits"}, "model": model, **loss})
        return config, builders.make_loss(config.loss, sigma_data=0.5, null_label=10).keywords

    loss = {**base, field: _LOSS_OTHER[field]}
    if field in builders.loss_fields(LossConfig(**loss)):
        config, changed = built({"loss": loss})
        builders.check_fields_read(config)
        assert changed != built({"loss": base})[1]
    else:
        with pytest.raises(ConfigError, match=rf"^loss\.{field}: "):
            builders.check_fields_read(built({"loss": loss})[0])


def _network_config(kind: tuple[str, str], values=()) -> ExperimentConfig:
    """The experiment of network ``kind`` (name, preconditioning) on a loss that trains it,
    with the model fields ``values``."""
    name, preconditioning = kind
    loss = "vp_epsilon" if kind == ("unet", "none") else "ncsn" if name != "mlp" else "dsm"
    model = {"name": name, "preconditioning": preconditioning, **dict(values)}
    return ExperimentConfig.from_dict({"model": model, "loss": {"name": loss}})


@pytest.mark.parametrize("kind", list(builders.MODEL_FIELDS), ids=" ".join)
@pytest.mark.parametrize("field", sorted(_MODEL_OTHER))
def test_a_model_field_is_accepted_exactly_where_the_network_is_built_from_it(kind, field):
    """As for the loss: every field :func:`scorelab.builders.model_fields` names for a network
    is accepted and changes the network's record (its constructor arguments); every other is
    refused. The networks are built abstractly (shapes only)."""
    images = 3.0 * np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)

    def record(config):
        build = lambda: builders.make_model(config.model, config.loss, images)[1]  # noqa: E731
        return eqx.filter_eval_shape(build)

    values = {field: _MODEL_OTHER[field]}
    if kind == ("unet", "none") or field not in ("dropout", "num_classes"):
        config = _network_config(kind, values)
        if field in builders.model_fields(config.model, config.loss):
            builders.check_fields_read(config)
            assert record(config) != record(_network_config(kind))
            return
    with pytest.raises(ConfigError, match=rf"^model\.{field}: "):
        builders.check_fields_read(_network_config(kind, values))


def _recording(config):
    """A copy of ``config`` that records the names of the fields read from it, and that set."""
    read: set[str] = set()
    names = {field.name for field in dataclasses.fields(config)}
    recorded = None  # the copy, once built (its validation reads every field)

    class Recording(type(config)):
        def __getattribute__(self, name):
            if self is recorded and name in names:
                read.add(name)
            return super().__getattribute__(name)

    recorded = Recording(**{name: getattr(config, name) for name in names})
    return recorded, read


@pytest.mark.parametrize("kind", list(builders.MODEL_FIELDS), ids=" ".join)
def test_the_builders_read_nothing_of_a_section_but_its_declared_fields(kind):
    """What make_model and make_loss read of the sections they are given, recorded, is within
    :func:`scorelab.builders.model_fields` and :func:`scorelab.builders.loss_fields` (with
    ``name``, ``preconditioning``, ``seed``): no read bypasses the table the check uses."""
    config = _network_config(kind)
    images = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    model, model_read = _recording(config.model)
    loss, loss_read = _recording(config.loss)
    eqx.filter_eval_shape(lambda: builders.make_model(model, loss, images)[1])
    builders.make_loss(loss, sigma_data=1.0, null_label=10)
    always = {"name", "preconditioning", "seed"}
    assert model_read <= {*builders.model_fields(config.model, config.loss), *always}
    assert loss_read <= {*builders.loss_fields(config.loss), "name"}
    assert "name" in loss_read and "name" in model_read  # the recording records


@pytest.mark.parametrize(
    ("job", "setting", "read"),
    [
        ("score-error", "sampler.grid='karras'", True),
        ("score-error", "sampler.n_levels=7", True),
        ("score-error", "sampler.options.eta=0.5", False),
        ("score-error", "sampler.name='heun'", False),
        ("likelihood", "sampler.sigma_max=40.0", True),
        ("likelihood", "sampler.rho=3.0", False),
        ("grid", "sampler.n_levels=7", True),
        ("grid", "sampler.prior='exact'", False),
        ("sample", "sampler.options.eta=0.5", True),
        ("sample", "data.source='digits_mixture'", True),
        ("sample", "model.channels=[8]", False),
        ("sample", "loss.sigma=2.0", False),
        ("train", "model.channels=[8]", True),
        ("train", "sampler.options.eta=0.5", True),
    ],
)
def test_a_job_accepts_a_field_it_reads_and_refuses_one_it_does_not(job, setting, read):
    """:func:`scorelab.workflows.check_reads` on a configuration one field away from the
    defaults: accepted where :data:`scorelab.workflows.JOB_READS` says the job reads it, else
    refused naming the field."""
    base = ExperimentConfig()
    config = ExperimentConfig.from_dict(apply_overrides({}, [setting]))
    name = setting.partition("=")[0]
    assert config.changed_fields(base) == [name]
    if read:
        workflows.check_reads(job, config, base)
    else:
        with pytest.raises(ConfigError, match=rf"^{name}: scorelab {job} does not read it"):
            workflows.check_reads(job, config, base)


@pytest.mark.parametrize(
    "grid", ["karras", "polyexponential", "geometric", "vp", "ays:seed_mixture_10"]
)
def test_rho_is_refused_on_a_grid_it_does_not_shape(grid):
    """``--rho 3`` on the geometric grid sampled the geometric grid and said nothing: rho
    shapes only the karras and polyexponential grids (:data:`scorelab.noise.RHO_GRIDS`)."""
    # The default rho = 5 makes a polyexponential grid of 100 levels merge in float32.
    base = ExperimentConfig.from_dict({"sampler": {"grid": grid, "rho": 2.0}})
    config = ExperimentConfig.from_dict({"sampler": {"grid": grid, "rho": 3.0}})
    assert config.changed_fields(base) == ["sampler.rho"]
    for job in ("sample", "score-error"):
        if grid in RHO_GRIDS:
            workflows.check_reads(job, config, base)
        else:
            with pytest.raises(ConfigError, match=rf"^sampler.rho: the '{grid}' grid has no rho"):
                workflows.check_reads(job, config, base)


def test_unet_channels_the_group_norms_cannot_divide_are_refused_by_the_configuration():
    """Found with the configuration, by its field (the U-Net refused them once built, after the
    data were loaded); another network does not read the U-Net's channels."""
    with pytest.raises(ConfigError, match=r"^model\.channels: every entry must be a multiple"):
        ModelConfig(name="unet", channels=(12, 16))
    ModelConfig(name="unet", channels=(12, 24), norm_groups=4)
    ModelConfig(name="mlp", channels=(12, 16))


def test_a_grid_too_large_is_named_by_the_setting_that_asked_for_it():
    """``nfe`` names itself (it was ``sampler.n_levels (from nfe N)``, which no flag matched),
    and the remedy names no flag: the demo and a TOML file have none."""
    with pytest.raises(ConfigError, match=r"^sampler\.nfe: needs .*; use fewer score evaluations$"):
        ExperimentConfig.from_dict({"sampler": {"name": "ddim", "nfe": 10**11}})
    with pytest.raises(ConfigError, match=r"^sampler\.n_levels: needs .*; use fewer levels$"):
        ExperimentConfig.from_dict({"sampler": {"name": "ddim", "n_levels": 10**11}})


def test_a_field_set_twice_with_two_values_is_refused():
    """``--set sampler.n_levels=5 --set sampler.n_levels=6`` sampled 6 levels and dropped the
    5 without a word (a flag and a --set of one field were already refused)."""
    twice = ["sampler.n_levels=5", "sampler.n_levels=6"]
    with pytest.raises(ConfigError, match=r"^sampler\.n_levels: --set gives 5, then 6; give it"):
        apply_overrides({}, twice)
    assert apply_overrides({}, ["train.steps=3", " train.steps = 3"]) == {"train": {"steps": 3}}
    # 1 == True == 1.0 in Python: the first value, of another type, was dropped silently.
    for second in ("true", "1.0"):
        with pytest.raises(ConfigError, match=r"^model\.scale_by_sigma: --set gives 1, then"):
            apply_overrides({}, ["model.scale_by_sigma=1", f"model.scale_by_sigma={second}"])


def test_a_class_conditional_edm_unet_is_refused_for_its_preconditioning():
    """It said 'applies to model.name = "unet" ..., not 'unet'' of a U-Net."""
    values = {"model": {"name": "unet", "preconditioning": "edm", "num_classes": 3},
              "loss": {"name": "ncsn"}, "data": {"source": "digits"}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^model\.num_classes: .*not preconditioning 'edm'"):
        ExperimentConfig.from_dict(values)


@pytest.mark.parametrize(
    "values, overrides, message",
    [
        (None, ["train.steps=5"], "values: expected a dict of sections"),
        ([], ["train.steps=5"], "values: expected a dict of sections"),
        ({}, [5], "override 5: expected a string section.field=value, got int"),
        ({}, "train.steps=5",
         "overrides: expected a list of 'section.field=value' strings, got str (wrap it in a"),
        ({}, None, "overrides: expected a list of 'section.field=value' strings, got NoneType"),
        ({}, ["sampler.options.eta=1", "sampler.options={}"],
         "sampler.options: an override replaces this table, dropping sampler.options.eta"),
        ({}, ["sampler.options.a.b=1", "sampler.options={}"],
         "sampler.options: an override replaces this table, dropping sampler.options.a.b"),
    ],
)  # fmt: skip
def test_apply_overrides_refuses_bad_input_by_name(values, overrides, message):
    """AttributeErrors for a non-dict or a non-string, a string read letter by
    letter, and a child override dropped without a word by a later one of its table."""
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        apply_overrides(values, overrides)


def test_apply_overrides_strips_each_part_and_keeps_a_table_then_its_field():
    """``" train . steps =5"`` made the keys ``'train '`` and ``' steps'``."""
    assert apply_overrides({}, [" train . steps =5"]) == {"train": {"steps": 5}}
    later = ["sampler.options={}", "sampler.options.eta=1"]
    assert apply_overrides({}, later) == {"sampler": {"options": {"eta": 1}}}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"beta_end": 0.9}, "beta_end"),
        ({"beta_start": 1e-30, "beta_end": 2e-30}, "beta_start"),
        ({"num_train_timesteps": 10**6}, "num_train_timesteps"),
    ],
)
def test_a_vp_schedule_whose_levels_float32_cannot_hold_is_named_by_the_loss(values, field):
    """The sampler inherits the schedule's VE levels: `beta_end = 0.9` (the cumulative product
    underflows, sigma_max = inf) was refused as `sampler.sigma_max: ... got inf`, a field
    nobody set, whose remedy left the schedule as broken."""
    with pytest.raises(ConfigError, match=rf"^loss\.{field}: the 'linear' schedule of"):
        ExperimentConfig.from_dict({"loss": {"name": "vp_epsilon", **values}})
    low, high = LossConfig(name="vp_epsilon").sigma_range  # DDPM's: held
    assert 0 < low < 0.02 and 100 < high < 200


def test_unet_fields_the_builder_refused_are_refused_by_the_configuration_by_name():
    """A repeated attention resolution was accepted without a word; layers_per_block = 10**30
    was accepted by the configuration and refused by the builder as `model: U-Net options`."""
    with pytest.raises(ConfigError, match=r"^model\.attention_resolutions: 8 given more than"):
        ModelConfig(name="unet", attention_resolutions=(8, 8))
    with pytest.raises(ConfigError, match=r"^model\.layers_per_block: expected at most 64, got"):
        ModelConfig(name="unet", layers_per_block=65)
    assert ModelConfig(name="unet", layers_per_block=64, attention_resolutions=(8, 4))


def test_an_unknown_grid_lists_the_saved_forms_too():
    """A folder given as the grid was told only the four built-in names."""
    with pytest.raises(ConfigError, match=r"^sampler\.grid: unknown value '/tmp'; .* ays:NAME"):
        SamplerConfig(grid="/tmp")


def test_a_loss_of_one_law_samples_with_ula_unless_a_sampler_is_named():
    """The default DDIM walks a grid a DSM model does not know: `train --loss dsm` saved it,
    and `sample --run` refused it with no flag given. A refusal of ULA's options says why ULA."""
    for loss in ("hyvarinen", "hutchinson", "sliced", "dsm"):
        assert ExperimentConfig.from_dict({"loss": {"name": loss}}).sampler.name == "ula"
    assert ExperimentConfig.from_dict({}).sampler.name == "ddim"  # NCSN's
    named = {"loss": {"name": "dsm"}, "sampler": {"name": "ddim"}}
    assert ExperimentConfig.from_dict(named).sampler.name == "ddim"  # train refuses it
    pattern = r"^sampler\.options\.eta: sampler 'ula': unknown .*\(ula: the sampler of loss 'dsm'"
    with pytest.raises(ConfigError, match=pattern):
        ExperimentConfig.from_dict({"loss": {"name": "dsm"}, "sampler": {"options": {"eta": 0.5}}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rho": 1e-30}, r"^sampler\.rho: rho 1e-30: sigma_max \*\* \(1 / rho\) overflows"),
        ({"sigma_min": 1.0, "sigma_max": 1.0 + 1e-7}, r"^sampler: sigma grid of 100 levels"),
    ],
)
def test_a_grid_the_sampler_cannot_build_is_named_by_the_field_that_broke_it(values, message):
    """A rho whose grid overflows is ``sampler.rho``; levels that merge are the section's
    fault (levels, range and rho together, the grid's name no part of it: pass 18A #8b blamed
    ``--grid``, never given): told apart by :class:`scorelab.noise.RhoError` and
    :class:`scorelab.noise.GridMergeError`, not by the message."""
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict({"sampler": {"name": "ddim", "grid": "karras", **values}})


def test_toml_nested_too_deeply_is_a_config_error_not_a_recursion_error(tmp_path):
    """tomllib parses nested arrays recursively: a file (or a --set value) of 50 000 brackets
    was a RecursionError traceback, exit 1 (pass 18, #1)."""
    deep = "[" * 50_000 + "]" * 50_000
    path = tmp_path / "deep.toml"
    path.write_text(f"x = {deep}\n")
    with pytest.raises(ConfigError, match=r"deep\.toml: invalid TOML \(arrays or tables nested"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^override train\.steps: a value nested too deeply"):
        apply_overrides({}, [f"train.steps={deep}"])


def test_a_broken_sigma_range_carries_its_section_and_ends():
    """:class:`scorelab.config.SigmaRangeError` carries the range, so that the command line
    names the end the user gave without reading the message; a value that is no number is
    a plain :class:`ConfigError`."""
    from scorelab.config import SigmaRangeError

    with pytest.raises(SigmaRangeError, match=r"^loss\.sigma_max: expected a number > ") as info:
        ExperimentConfig.from_dict({"loss": {"sigma_min": 2.0, "sigma_max": 1.0}})
    assert (info.value.section, info.value.sigma_min, info.value.sigma_max) == ("loss", 2.0, 1.0)
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"sampler": {"sigma_min": 0.1, "sigma_max": "big"}})
    assert not isinstance(info.value, SigmaRangeError)


def test_levels_beyond_training_names_a_grid_outside_the_trained_range():
    """A noise-conditional loss's sampling grid within its trained levels (the range it sets
    by default, or a relative 1e-6 beyond from float round trips) says nothing; a grid past
    either end says both ranges; a loss of one law or a grid-free sampler never does."""
    loss = {"name": "ncsn", "sigma_min": 0.05, "sigma_max": 20.0}
    assert ExperimentConfig.from_dict({"loss": loss}).levels_beyond_training() is None
    rounded = {"sigma_min": 0.05 * (1 - 1e-7), "sigma_max": 20.0 * (1 + 1e-7)}
    config = ExperimentConfig.from_dict({"loss": loss, "sampler": rounded})
    assert config.levels_beyond_training() is None
    for sampler in ({"sigma_min": 0.01}, {"sigma_max": 80.0}):
        beyond = ExperimentConfig.from_dict({"loss": loss, "sampler": sampler})
        low, high = sampler.get("sigma_min", 0.05), sampler.get("sigma_max", 20.0)
        assert beyond.levels_beyond_training() == (
            f"the grid spans sigma {low:g} to {high:g}, beyond the 0.05 to 20 the model was "
            "trained on: its scores outside that range are extrapolations"
        )
    one_law = ExperimentConfig.from_dict({"loss": {"name": "dsm"}, "sampler": {"name": "ula"}})
    assert one_law.levels_beyond_training() is None
    no_grid = {"name": "ula", "sigma_min": 0.01}
    config = ExperimentConfig.from_dict({"loss": loss, "sampler": no_grid})
    assert config.levels_beyond_training() is None

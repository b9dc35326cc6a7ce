"""Experiment configuration: what ``auto`` resolves to, and validation of the model section."""

import dataclasses

import numpy as np
import pytest

from scorelab.builders import make_model
from scorelab.config import IMAGE_RECIPE, TRAIN_RECIPE, ConfigError, ExperimentConfig


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

"""Experiment configuration: what ``auto`` resolves to, and validation of the model section."""

import numpy as np
import pytest

from scorelab.builders import make_model
from scorelab.config import ConfigError, ExperimentConfig


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

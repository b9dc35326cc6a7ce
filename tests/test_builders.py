"""The builders' argument checks: a configuration section of another kind is named."""

import pytest

from scorelab import builders


@pytest.mark.parametrize(
    "build",
    ["make_target", "make_data", "make_sigmas", "make_sampler", "make_loss", "loss_fields"],
)
def test_a_builder_names_a_config_that_is_not_its_section(build):
    """``make_sampler(None)`` or ``make_data("seed_mixture")`` failed on an attribute deep
    inside (pass 19A, #9)."""
    with pytest.raises(TypeError, match=r"^config: expected a \w+Config, got str"):
        getattr(builders, build)("seed_mixture")


def test_make_optimizer_names_a_config_that_is_not_a_train_config():
    from scorelab.training import make_optimizer

    with pytest.raises(TypeError, match=r"^config: expected a scorelab.training.TrainConfig"):
        make_optimizer({"steps": 3})

"""The builders' argument checks: a configuration section of another kind is named."""

import numpy as np
import pytest

from scorelab import builders


@pytest.mark.parametrize(
    "build",
    [
        "make_target",
        "make_data",
        "example_shape",
        "make_sigmas",
        "make_sampler",
        "make_loss",
        "loss_fields",
    ],
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


@pytest.mark.parametrize(
    "data, message",
    [
        (np.full((3, 2), np.nan), r"^data: its standard deviation is nan"),
        (np.zeros((0, 2)), r"^data: empty"),
        (np.array([[1e300], [-1e300]]), r"^data: its standard deviation is inf"),
    ],
)
def test_data_scale_refuses_what_has_no_finite_scale(data, message):
    """NaN data was taken for constant data (scale 1), and 1e300 gave inf (pass 19A, #18)."""
    with pytest.raises(ValueError, match=message):
        builders.data_scale(data)


def test_ragged_rows_are_a_data_error():
    """``validate_data([[1, 2], [3]])`` was NumPy's "inhomogeneous shape" (pass 19A, #18)."""
    from scorelab.data import DataError, validate_data

    with pytest.raises(DataError, match=r"^data: rows of different lengths"):
        validate_data([[1.0, 2.0], [3.0]])


def test_example_shape_is_the_shape_of_make_data_s_examples(tmp_path):
    """:func:`builders.example_shape` (headers only for files) agrees with the data read whole,
    for every kind of source: a target, a toy set, the digits, points in a ``.npy`` and a
    ``.csv``, and images in either layout."""
    from scorelab.config import DataConfig

    rng = np.random.default_rng(0)
    np.save(tmp_path / "points.npy", rng.normal(size=(6, 3)))
    np.savetxt(tmp_path / "points.csv", rng.normal(size=(6, 5)), delimiter=",")
    np.save(tmp_path / "nhwc.npy", rng.integers(0, 256, (4, 6, 7, 3), dtype=np.uint8))
    np.savez(tmp_path / "grey.npz", x=rng.uniform(size=(4, 5, 9)))
    sources = ["two_moons", "digits", "digits16"]
    sources += [str(tmp_path / name) for name in ("points.npy", "points.csv", "nhwc.npy")]
    sources += [str(tmp_path / "grey.npz")]
    for source in sources:
        config = DataConfig(source=source, n=3)  # n: a target's or toy set's draws
        assert builders.example_shape(config) == builders.make_data(config).shape[1:], source
    assert builders.example_shape(DataConfig(source=str(tmp_path / "nhwc.npy"))) == (3, 6, 7)
    # the targets' dimensions, without a draw (which compiles their samplers: seconds)
    assert builders.example_shape(DataConfig(source="seed_mixture")) == (2,)
    assert builders.example_shape(DataConfig(source="digits_mixture")) == (64,)

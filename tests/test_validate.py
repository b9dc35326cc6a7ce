"""Configuration dataclasses read from mappings: strict types, named fields (from_mapping)."""

import dataclasses
import re

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from scorelab._validate import (
    check_callable,
    check_instance,
    check_mapping,
    check_sequence,
    from_mapping,
)
from scorelab.config import ConfigError, ExperimentConfig, apply_overrides


@dataclasses.dataclass(frozen=True)
class _Inner:
    rate: float = 1.0


@dataclasses.dataclass(frozen=True)
class _Outer:
    flag: bool = False
    count: int = 1
    name: str = "a"
    sizes: tuple[int, ...] = (1, 2)
    limit: float | None = None
    inner: _Inner = _Inner()


def test_values_keep_their_types_and_missing_fields_keep_the_base():
    base = _Outer(count=3)
    out = from_mapping(_Outer, {"flag": True, "sizes": [4], "inner": {"rate": 2}}, "s", base=base)
    assert out == _Outer(flag=True, count=3, sizes=(4,), inner=_Inner(rate=2.0))
    assert isinstance(out.inner.rate, float)


@dataclasses.dataclass(frozen=True)
class _Window:
    steps: int = 10
    warmup: int = 2

    def __post_init__(self):
        if not self.warmup < self.steps:
            raise ValueError(f"warmup: must be < steps ({self.steps}), got {self.warmup}")


def test_a_range_error_in_a_field_kept_from_the_base_says_it_is_the_default():
    """The demo's warmup_steps = 200 under a user's steps = 3 was blamed as if given."""
    with pytest.raises(
        ValueError, match=r"^s\.warmup: .*got 2 \(s\.warmup = 2 is the default: set"
    ):
        from_mapping(_Window, {"steps": 1}, "s", base=_Window())
    with pytest.raises(ValueError, match=r"^s\.warmup: must be < steps \(1\), got 5$"):
        from_mapping(_Window, {"steps": 1, "warmup": 5}, "s", base=_Window())


@pytest.mark.parametrize(
    "values, message",
    [
        ({"flag": "false"}, "s.flag: expected true or false, got 'false'"),
        ({"flag": 0}, "s.flag: expected true or false"),
        ({"count": 2.5}, "s.count: expected an integer"),
        ({"count": True}, "s.count: expected an integer"),
        ({"name": 1}, "s.name: expected a string, got 1"),
        ({"sizes": 3}, "s.sizes: expected a list"),
        ({"sizes": ["x"]}, "s.sizes: expected an integer"),
        ({"limit": "nope"}, "s.limit: expected a number"),
        ({"inner": 1}, "s.inner: expected a table of fields, got int"),
        ({"inner": {"speed": 1}}, "s.inner.speed: unknown field; accepted: rate"),
        ({"other": 1}, "s.other: unknown field; accepted: flag, count"),
        # A [demo] table in the demo's settings file, whose fields sit at its top level:
        (
            {"s": {"count": 2}},
            "s.s: unknown field; accepted: flag, count, name, sizes, limit, "
            "inner (at the top level of the file, not in a [s] table)",
        ),
    ],
)
def test_wrong_types_and_unknown_fields_are_named(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        from_mapping(_Outer, values, "s")


@pytest.mark.parametrize(
    "values, message",
    [
        (3, "configuration: expected a table of sections"),
        ({"data": 1}, "data: expected a table of fields"),
        # a name that reads as a TOML number: quoting it makes it the string
        ({"data": {"source": 1}}, r'data.source: expected a string, got 1 \(quote it: "1"\)'),
        ({"data": {"source": True}}, r'got True \(quote it: "true"\)'),
        ({"train": {"ema_decay": "0.9"}}, "train.ema_decay: expected a number"),
        ({"model": {"normalise_input": "false"}}, "model.normalise_input: expected true or false"),
        ({"optimizer": {}}, "optimizer: unknown section; accepted: data, model"),
        ({"train": {"steps": 0}}, "train.steps: expected an integer >= 1"),
    ],
)
def test_experiment_sections_are_strict(values, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(values)


def test_an_ncsn_run_samples_over_the_range_it_learned_unless_told_otherwise():
    config = ExperimentConfig.from_dict({"loss": {"name": "ncsn", "sigma_max": 5.0}})
    assert (config.sampler.sigma_min, config.sampler.sigma_max) == (0.02, 5.0)
    config = ExperimentConfig.from_dict(
        {"loss": {"name": "ncsn", "sigma_max": 5.0}, "sampler": {"sigma_max": 20.0}}
    )
    assert config.sampler.sigma_max == 20.0


def test_sampler_options_nest_and_flat_keys_of_earlier_versions_move_into_them():
    nested = ExperimentConfig.from_dict({"sampler": {"name": "ddim", "options": {"eta": 0.5}}})
    flat = ExperimentConfig.from_dict({"sampler": {"name": "ddim", "eta": 0.5}})
    assert nested == flat and nested.sampler.options == {"eta": 0.5}
    with pytest.raises(ConfigError, match=r"sampler\.options\.e: .*'e'.*eta"):
        ExperimentConfig.from_dict({"sampler": {"name": "ddim", "e": 0.5}})
    with pytest.raises(ConfigError, match=r"sampler\.options\.n_steps: .*'n_steps'"):
        ExperimentConfig.from_dict({"sampler": {"name": "ddim", "options": {"n_steps": 3}}})
    # Both spellings, one value each: the flat one was dropped without a word (pass 16, #2).
    both = {"sampler": {"name": "ddim", "eta": 0.5, "options": {"eta": 0.7}}}
    with pytest.raises(ConfigError, match=r"sampler.eta: given as 0.5 and as sampler.options.eta"):
        ExperimentConfig.from_dict(both)
    same = {"sampler": {"name": "ddim", "eta": 0.5, "options": {"eta": 0.5}}}
    assert ExperimentConfig.from_dict(same) == nested


def test_overrides_reach_nested_tables_and_leave_the_input_alone():
    values = {"sampler": {"name": "ddim"}}
    out = apply_overrides(values, ["sampler.options.eta=0.5", "data.source=points.csv"])
    assert out == {
        "sampler": {"name": "ddim", "options": {"eta": 0.5}},
        "data": {"source": "points.csv"},
    }
    assert values == {"sampler": {"name": "ddim"}}
    with pytest.raises(ConfigError, match="expected section.field=value"):
        apply_overrides({}, ["steps=3"])


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["data", "model", "loss", "train", "sampler", "x"]),
        st.dictionaries(st.text(max_size=12), _VALUES, max_size=3),
        max_size=3,
    )
)
def test_any_mapping_is_a_configuration_or_one_config_error(values):
    try:
        ExperimentConfig.from_dict(values)
    except ConfigError as error:
        assert "\n" not in str(error)


def test_the_float32_limits_are_numpys():
    """FLOAT32_MAX is float32's largest finite number, SIGMA_LIMIT the largest noise level whose
    square and reciprocal square are normal float32 numbers and SIGMA_FLOOR the smallest whose
    square is (all written as literals: _validate imports no numpy)."""
    import numpy as np

    from scorelab._validate import FLOAT32_MAX, SIGMA_FLOOR, SIGMA_LIMIT

    assert FLOAT32_MAX == float(np.finfo(np.float32).max)
    assert np.isfinite(np.float32(SIGMA_LIMIT) ** 2)
    tiny = float(np.finfo(np.float32).tiny)  # the smallest normal float32
    assert 1 / np.float32(SIGMA_LIMIT) ** 2 >= tiny  # a precision that is a normal float32
    assert SIGMA_LIMIT <= 2.0**63 < 1.03 * SIGMA_LIMIT  # 9.2e18 of 9.22e18
    assert np.float32(SIGMA_FLOOR) ** 2 >= tiny
    assert SIGMA_FLOOR >= np.sqrt(tiny) > SIGMA_FLOOR / 1.03  # 1.1e-19 of 1.08e-19


# --- the shared type checks: one message form for every module's arguments ------------------


def test_check_callable_names_field_signature_and_type():
    check_callable("score_fn", lambda x, s: x, "score_fn(x, sigma)")
    check_callable("weighting_fn", None, "weighting_fn(sigma)", optional=True)
    with pytest.raises(
        TypeError, match=r"^score_fn: expected a callable score_fn\(x, sigma\), got int$"
    ):
        check_callable("score_fn", 3, "score_fn(x, sigma)")
    message = r"^weighting_fn: expected a callable weighting_fn\(sigma\) or None, got float$"
    with pytest.raises(TypeError, match=message):
        check_callable("weighting_fn", 1.0, "weighting_fn(sigma)", optional=True)
    with pytest.raises(ConfigError, match="^model: expected a callable m"):
        check_callable("model", "m", "m(x)", error=ConfigError)


def test_check_mapping_names_field_what_type_and_remedy():
    check_mapping("sets", {"a": 1}, "a dict of label -> images")
    check_mapping("run_config", None, "a dict of sections", optional=True)
    with pytest.raises(
        TypeError, match=r"^sets: expected a dict of label -> images, got list; e\.g\. x$"
    ):
        check_mapping("sets", [1], "a dict of label -> images", remedy="e.g. x")
    with pytest.raises(
        TypeError, match=r"^run_config: expected None or a dict of sections, got str$"
    ):
        check_mapping("run_config", "x", "a dict of sections", optional=True)
    with pytest.raises(ConfigError, match=r"^overrides: expected a mapping, got tuple$"):
        check_mapping("overrides", (), "a mapping", error=ConfigError)


def test_check_sequence_refuses_strings_and_when_strict_mappings_and_scalars():
    for value in ([1], (1,), np.zeros(2), range(3)):
        check_sequence("rows", value, "a list of dicts")
    check_sequence("names", {"sw"}, "a list of metric names", strict=False)  # any iterable
    for value, got in [("sw", "'sw'"), (b"ab", "b'ab'"), ({"a": 1}, "dict"), (5, "int")]:
        with pytest.raises(
            TypeError, match=f"^rows: expected a list of dicts, got {re.escape(got)}; wrap$"
        ):
            check_sequence("rows", value, "a list of dicts", "wrap")
    with pytest.raises(TypeError, match=r"^names: expected a list, got 'sw'$"):
        check_sequence("names", "sw", "a list", strict=False)


def test_check_instance_names_field_what_and_type():
    check_instance("label", None, str, "a string", optional=True)
    check_instance("config", ExperimentConfig(), ExperimentConfig, "an ExperimentConfig")
    with pytest.raises(TypeError, match=r"^label: expected None or a string, got int$"):
        check_instance("label", 3, str, "a string", optional=True)
    with pytest.raises(TypeError, match=r"^config: expected an ExperimentConfig, got dict; use x$"):
        check_instance("config", {}, ExperimentConfig, "an ExperimentConfig", remedy="use x")


def test_integers_past_int64_or_float32_are_refused_by_name_not_overflowed():
    """``float(10**400)`` raised OverflowError (a traceback through the CLI); a size check's
    ``8.0 * 10**400`` too (pass 16, #1)."""
    from scorelab._validate import MAX_INT, check_int, check_memory, check_real, typed

    huge = 10**400
    with pytest.raises(ValueError, match=r"^n: expected an integer from 1 to 2\*\*63 - 1, got an "):
        check_int("n", huge, 1)
    check_int("n", MAX_INT, 1)  # the largest taken
    with pytest.raises(ValueError, match=r"^x: expected a number > 0, within float32's range"):
        check_real("x", huge, "a number > 0", lambda v: v > 0)
    with pytest.raises(ValueError, match=r"^s: expected a number within float32's range, got an "):
        typed(float, huge, "s")
    with pytest.raises(ValueError, match=r"^k: expected an integer within int64's range"):
        typed(int, -huge, "k")
    assert typed(float, 3, "s") == 3.0 and typed(int, MAX_INT, "k") == MAX_INT
    with pytest.raises(ValueError, match="^n: needs more memory than any machine has; fewer"):
        check_memory("n", 32 * huge, "fewer")


def test_none_is_spelled_none_where_toml_has_no_null():
    """``train.ema_decay`` and ``train.batch_size`` offer None ('expected None or ...'), which
    neither TOML nor ``--set`` could write (pass 16, #8): "none" is None there (and only for
    numbers: a string field keeps the string)."""
    values = {"train": {"ema_decay": "none", "batch_size": "None"}}
    train = ExperimentConfig.from_dict(values).train
    assert train.ema_decay is None and train.batch_size is None
    with pytest.raises(ConfigError, match="train.steps: expected an integer, got 'none'"):
        ExperimentConfig.from_dict({"train": {"steps": "none"}})


def test_check_file_names_a_nul_byte_and_a_link_that_leads_nowhere(tmp_path):
    """``data.source = "a\\u0000b.npy"`` in a TOML file printed a raw NUL in "data file not
    found" (pass 20A)."""
    from scorelab._validate import check_file

    with pytest.raises(ValueError, match=r"^'a\\x00b.npy': a path with a NUL byte"):
        check_file("a\x00b.npy", "data file")
    with pytest.raises(ValueError, match=r"^'a\\nb.npy': a path with a line break"):
        check_file("a\nb.npy", "data file")
    (tmp_path / "gone.npy").symlink_to(tmp_path / "nothing.npy")
    with pytest.raises(FileNotFoundError, match=r"gone.npy is a symbolic link to .*nothing.npy"):
        check_file(tmp_path / "gone.npy", "data file")

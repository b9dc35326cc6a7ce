"""Checkpoints that detect their own damage, and models saved by import path.

The training loop's use of both (resume from the newest intact checkpoint, bitwise equal to an
uninterrupted run) is tested in ``test_training.py``.
"""

import json
import os
import re
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _damage import flip_a_bit
from _user_model import Affine, Library

from scorelab.checkpoints import (
    load_model,
    model_files,
    open_checkpoints,
    restore_checkpoint,
    save_checkpoint,
    save_model,
    tree_sha256,
)
from scorelab.models import MLP, ConditionalMLP

STATE = {"a": jnp.arange(1000.0), "b": np.arange(50, dtype=np.float32)}


def like(metadata):
    """The restore target of :data:`STATE`, whatever the metadata."""
    return STATE


@pytest.fixture
def two_steps(tmp_path):
    """A checkpoint folder with steps 1 and 2 of :data:`STATE` (step 2 with ``a`` doubled)."""
    manager = open_checkpoints(tmp_path / "checkpoints")
    save_checkpoint(manager, 1, STATE, {"step": 1})
    save_checkpoint(manager, 2, {**STATE, "a": 2 * STATE["a"]}, {"step": 2})
    manager.close()
    return tmp_path / "checkpoints"


def test_an_intact_checkpoint_restores_its_state_and_metadata(two_steps):
    step, state, metadata = restore_checkpoint(open_checkpoints(two_steps), like)
    assert step == 2 and metadata == {"step": 2}  # the checksums are checked and removed
    np.testing.assert_array_equal(state["a"], 2 * STATE["a"])
    np.testing.assert_array_equal(state["b"], STATE["b"])


@pytest.mark.parametrize(
    ("digests", "reason"),
    [(True, "file state/.* changed"), (False, "array checksum mismatch")],
)
def test_a_flipped_bit_falls_back_to_the_newest_intact_checkpoint(two_steps, digests, reason):
    # Orbax alone restores such a flip as silently different numbers: the file digests see it
    # before orbax reads anything, and the array checksum in a step saved before them.
    flip_a_bit(two_steps / "2")
    if not digests:
        (two_steps / "2" / "file_digests.json").unlink()
    manager = open_checkpoints(two_steps)
    with pytest.warns(UserWarning, match=f"step 2: {reason}.*resuming from step 1, the newest"):
        step, state, metadata = restore_checkpoint(manager, like)
    assert step == 1 and metadata == {"step": 1}
    np.testing.assert_array_equal(state["a"], STATE["a"])
    assert manager.all_steps() == [1], "the damaged step is deleted, to be written again"


@pytest.mark.parametrize(
    ("digests", "reason"),
    [(True, "file metadata/metadata changed"), (False, "metadata checksum mismatch")],
)
def test_edited_metadata_is_damage(two_steps, digests, reason):
    metadata_file = two_steps / "2" / "metadata" / "metadata"
    text = metadata_file.read_text()
    assert '"step": 2' in text
    metadata_file.write_text(text.replace('"step": 2', '"step": 3'))
    if not digests:
        (two_steps / "2" / "file_digests.json").unlink()
    with pytest.warns(UserWarning, match=f"step 2: {reason}"):
        assert restore_checkpoint(open_checkpoints(two_steps), like)[0] == 1


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda step: _truncate_largest(step), "file state/.* changed"),
        (lambda step: next((step / "state").rglob("manifest.ocdbt")).unlink(), "missing"),
        (lambda step: (step / "file_digests.json").write_text("{"), "unreadable file digests"),
        (lambda step: step.rename(step.with_name("3")), "step 3: holds step 2"),
    ],
)
def test_damaged_files_are_found_before_orbax_reads_them(two_steps, damage, reason):
    """A truncated file made orbax's reader threads fail after the step was found damaged,
    printing dozens of asyncio tracebacks; a folder renamed to another step gave a NumPy
    broadcast error when its losses were read as that step's."""
    damage(two_steps / "2")
    manager = open_checkpoints(two_steps)
    with pytest.warns(UserWarning, match=reason):
        assert restore_checkpoint(manager, like)[0] == 1
    assert manager.all_steps() == [1]


def _truncate_largest(step_dir):
    largest = max(
        (path for path in (step_dir / "state").rglob("*") if path.is_file()),
        key=lambda path: path.stat().st_size,
    )
    largest.write_bytes(largest.read_bytes()[:10])


def test_no_intact_checkpoint_is_an_error_that_deletes_nothing(two_steps):
    for step in ("1", "2"):
        flip_a_bit(two_steps / step)
    manager = open_checkpoints(two_steps)
    with pytest.raises(ValueError, match="no intact checkpoint.*step 2: .*step 1: .*delete the"):
        restore_checkpoint(manager, like)
    assert manager.all_steps() == [1, 2]


def test_a_refusal_of_like_is_not_damage(two_steps):
    def refuse(metadata):
        raise ValueError(f"cannot resume step {metadata['step']}")

    manager = open_checkpoints(two_steps)
    with pytest.raises(ValueError, match="cannot resume step 2"):
        restore_checkpoint(manager, refuse)
    assert manager.all_steps() == [1, 2]


def test_arrays_of_other_shapes_than_like_are_a_mismatch_not_damage(two_steps):
    # A run continued with a wider network: step 2 was deleted as damaged, with a warning.
    manager = open_checkpoints(two_steps)
    wider = {**STATE, "a": jnp.arange(5.0)}
    with pytest.raises(ValueError, match="step 2 holds arrays of other shapes than like's"):
        restore_checkpoint(manager, lambda metadata: wider)
    assert manager.all_steps() == [1, 2]


def _refuse_other_runs(metadata):
    """:data:`STATE` for this run's steps; a refusal, as ``train``'s, for another run's."""
    if metadata.get("run") == "other":
        raise ValueError("cannot resume run 'other'")
    return STATE


@pytest.mark.parametrize(
    ("other_state", "other_like", "words"),
    [
        ({"a": jnp.arange(5.0)}, like, "step 3 holds arrays of other shapes than like's"),
        (STATE, _refuse_other_runs, "cannot resume run 'other'"),
    ],
)
def test_another_runs_step_under_a_new_number_is_refused_not_deleted(
    two_steps, tmp_path, other_state, other_like, words
):
    """Another run's step 1 copied in as step 3 was deleted as a renamed, damaged step ('step
    3: holds step 1'), and the restore went on from step 2 (pass 21C, F8); as under its own
    number, it is refused and kept."""
    other = open_checkpoints(tmp_path / "other")
    save_checkpoint(other, 1, other_state, {"run": "other"})
    other.close()
    shutil.copytree(tmp_path / "other" / "1", two_steps / "3")
    manager = open_checkpoints(two_steps)
    with pytest.raises(ValueError, match=words):
        restore_checkpoint(manager, other_like)
    assert manager.all_steps() == [1, 2, 3]


def test_a_step_folder_that_is_a_link_is_refused_and_its_target_kept(two_steps, tmp_path):
    """A link in the checkpoint folder was deleted as a damaged step, which failed on 'Cannot
    call rmtree on a symbolic link' (pass 21C, F9)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("important")
    (two_steps / "3").symlink_to("../victim")
    manager = open_checkpoints(two_steps)
    words = "checkpoints/3: a symbolic link, not a checkpoint step; remove the link"
    with pytest.raises(ValueError, match=words):
        restore_checkpoint(manager, like)
    assert (two_steps / "3").is_symlink() and manager.all_steps() == [1, 2, 3]
    assert (victim / "notes.txt").read_text() == "important"


def _pipe(path):
    """Replace ``path`` by a named pipe, which a reader waits on until something writes."""
    path.unlink()
    os.mkfifo(path)


def _link_out(path):
    """Replace ``path`` by a link to an identical copy outside its step."""
    outside = path.parents[3] / "outside"
    shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)


@pytest.mark.parametrize("digests", [True, False])
@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (_pipe, "metadata/metadata is not a regular file"),
        (_link_out, "metadata/metadata is a link out of the step"),
    ],
)
def test_an_entry_that_no_save_writes_is_damage_found_before_orbax_reads_it(
    two_steps, tmp_path, digests, entry, reason
):
    """A pipe in a step without file digests made orbax's reader wait forever (pass 21C, F12);
    a link to an identical file outside the step passed the digests and was read."""
    entry(two_steps / "2" / "metadata" / "metadata")
    if not digests:
        (two_steps / "2" / "file_digests.json").unlink()
    manager = open_checkpoints(two_steps)
    with pytest.warns(UserWarning, match=rf"step 2: {reason}\); resuming from step 1"):
        assert restore_checkpoint(manager, like)[0] == 1
    assert manager.all_steps() == [1]
    if entry is _link_out:  # deleting the step removed the link, not what it leads to
        assert '"step": 2' in (tmp_path / "outside").read_text()


@pytest.mark.parametrize(
    ("step", "words"),
    [
        (3.5, "step: expected an integer"),  # orbax declined it and returned: nothing written
        (-1, "step: expected an integer >= 0"),
        (True, "step: expected an integer"),
        (2, "step: 2 is not after the newest checkpoint"),  # step 2 kept its old arrays
        (1, "step: 1 is not after the newest checkpoint"),  # never written
    ],
)
def test_a_step_that_would_not_be_saved_is_refused(two_steps, step, words):
    manager = open_checkpoints(two_steps)
    with pytest.raises(ValueError, match=re.escape(words)):
        save_checkpoint(manager, step, STATE, {"step": step})
    assert manager.all_steps() == [1, 2]
    assert restore_checkpoint(manager, like)[2] == {"step": 2}


def test_typed_keys_are_hashed_by_their_data_and_refused_by_orbax(tmp_path):
    key = jax.random.key(3)
    assert tree_sha256({"k": key}) == tree_sha256({"k": jax.random.key_data(key)})
    assert tree_sha256({"k": key}) != tree_sha256({"k": jax.random.key(4)})
    manager = open_checkpoints(tmp_path / "checkpoints")
    with pytest.raises(TypeError, match=r"state: holds a typed PRNG key.*key_data"):
        save_checkpoint(manager, 1, {"k": key}, {})


def test_a_leaf_that_is_not_an_array_is_left_out_of_the_hash():
    # Its bytes were its memory address: a different hash in every process.
    assert tree_sha256({"a": STATE["b"], "f": object()}) == tree_sha256({"a": STATE["b"]})


def test_an_empty_folder_has_nothing_to_restore(tmp_path):
    assert restore_checkpoint(open_checkpoints(tmp_path), like) is None


def arrays(model):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


@pytest.mark.parametrize(
    ("model", "kwargs", "class_path"),
    [
        (Affine(2, scale=2.0, key=jax.random.key(1)), {"dim": 2, "scale": 2.0}, "Affine"),
        (eqx.tree_at(lambda m: m.b, Library.Shift(2), jnp.ones(2)), {"dim": 2}, "Library.Shift"),
    ],
)
def test_a_users_own_module_round_trips_by_import_path(tmp_path, model, kwargs, class_path):
    save_model(tmp_path / "model", model, **kwargs)
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["class"] == f"_user_model:{class_path}"
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(model)
    for a, b in zip(arrays(loaded), arrays(model), strict=True):
        np.testing.assert_array_equal(a, b)
    x = jnp.array([0.5, -1.0])
    np.testing.assert_array_equal(loaded(x, 0.3), model(x, 0.3))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"key": jax.random.PRNGKey(0)}, "key: not saved with the model"),  # load refused it
        ({"widths": object()}, "constructor_kwargs: not JSON-serialisable"),
    ],
)
def test_arguments_load_model_could_not_use_are_refused_before_writing(tmp_path, kwargs, words):
    model = MLP(jax.random.key(0), 2, (8,))
    with pytest.raises(ValueError, match=re.escape(words)):
        save_model(tmp_path / "m", model, dim=2, **kwargs)
    assert not any(tmp_path.iterdir())


def test_a_class_another_process_cannot_import_is_refused(tmp_path):
    class Local(eqx.Module):
        b: jax.Array

    with pytest.raises(ValueError, match=r"Local is defined inside a function.*importable module"):
        save_model(tmp_path / "local", Local(jnp.zeros(2)))
    script = {"__name__": "__main__"}  # what a class in a script or notebook gets
    exec("import equinox as eqx, jax\nclass Net(eqx.Module):\n    b: jax.Array\n", script)
    with pytest.raises(ValueError, match=r"Net is defined in __main__.*importable module"):
        save_model(tmp_path / "main", script["Net"](jnp.zeros(2)))
    assert not any(tmp_path.iterdir()), "nothing is written for a refused model"


def test_a_model_json_with_a_bare_scorelab_name_still_loads(tmp_path):
    # model.json files written before import paths: {"class": "MLP", "kwargs": ...}.
    model = MLP(jax.random.key(0), dim=2, widths=(8,))
    save_model(tmp_path / "model", model, dim=2, widths=(8,))
    (tmp_path / "model.json").write_text(
        json.dumps({"class": "MLP", "kwargs": {"dim": 2, "widths": [8]}})
    )
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is MLP
    for a, b in zip(arrays(loaded), arrays(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_model_names_what_it_cannot_use(tmp_path):
    model = MLP(jax.random.key(0), dim=2, widths=(8,))
    save_model(tmp_path / "model", model, dim=2, widths=(8,))
    spec = json.loads((tmp_path / "model.json").read_text())
    for name, message in [
        ("no_such_module:Net", "'no_such_module:Net' cannot be imported.*PYTHONPATH"),
        ("scorelab.models:NoSuchNet", "'scorelab.models:NoSuchNet' cannot be imported"),
        ("scorelab.models:ACTIVATIONS", "is not an equinox.Module"),
    ]:
        (tmp_path / "model.json").write_text(json.dumps({**spec, "class": name}))
        with pytest.raises(ValueError, match=message):
            load_model(tmp_path / "model")


def test_arguments_the_class_refuses_blame_the_json_and_a_shape_mismatch_the_pair(tmp_path):
    """A NaN ``sigma_data`` or an unknown keyword in model.json was reported as 'model.eqx does
    not fit ... the files do not belong together'; the JSON file is the one at fault."""
    from scorelab.precond import EDMPreconditioned

    network = {"class": "scorelab.models:ConditionalMLP", "kwargs": {"dim": 2, "widths": [8, 8, 8]}}
    model = EDMPreconditioned(ConditionalMLP(jax.random.key(0), dim=2, widths=(8, 8, 8)), 0.5)
    save_model(tmp_path / "model", model, network=network, sigma_data=0.5)
    spec = json.loads((tmp_path / "model.json").read_text())
    for kwargs, message in [
        ({"sigma_data": float("nan")}, r"model.json: its arguments build no .*sigma_data.*nan"),
        ({"sigma_data": -1.0}, r"model.json: its arguments build no .*sigma_data"),
        ({"sigmadata": 0.5}, r"model.json: its arguments build no .*sigmadata"),
    ]:
        record = {**spec, "kwargs": {"network": network, **kwargs}}
        (tmp_path / "model.json").write_text(json.dumps(record))
        with pytest.raises(ValueError, match=message):
            load_model(tmp_path / "model")
    wider = {"class": network["class"], "kwargs": {"dim": 2, "widths": [16, 8, 8]}}
    (tmp_path / "model.json").write_text(
        json.dumps({**spec, "kwargs": {"network": wider, "sigma_data": 0.5}})
    )
    with pytest.raises(ValueError, match=r"model.eqx does not fit .*belong together"):
        load_model(tmp_path / "model")


def test_a_model_file_from_another_save_is_refused_by_its_checksum(tmp_path):
    # A process killed between save_model's two atomic writes leaves the new .eqx beside the
    # old .json: the pair is refused, never loaded as a mixture.
    save_model(tmp_path / "old", MLP(jax.random.key(0), dim=2, widths=(8,)), dim=2, widths=(8,))
    save_model(tmp_path / "new", MLP(jax.random.key(1), dim=2, widths=(8,)), dim=2, widths=(8,))
    shutil.copy(tmp_path / "new.eqx", tmp_path / "old.eqx")
    with pytest.raises(ValueError, match=r"old.eqx does not match the checksum in old.json"):
        load_model(tmp_path / "old")


def test_a_network_loads_in_the_float_width_it_was_saved_in(tmp_path):
    """Under jax_enable_x64 the skeleton's floats are float64: a float32 network was refused as
    'changed dtype from float64 in `like` to float32 on disk' (files that 'do not belong
    together'). Each width now loads as saved, under x64 or not, bit for bit."""
    model = MLP(jax.random.key(0), widths=(8, 8))
    save_model(tmp_path / "f32", model, dim=2, widths=(8, 8))
    with jax.enable_x64(True):
        loaded = load_model(tmp_path / "f32")
        assert {leaf.dtype for leaf in arrays(loaded)} == {np.dtype(np.float32)}
        for a, b in zip(arrays(loaded), arrays(model), strict=True):
            np.testing.assert_array_equal(a, b)
        wide = MLP(jax.random.key(0), widths=(8, 8))  # float64 under x64
        save_model(tmp_path / "f64", wide, dim=2, widths=(8, 8))
        again = load_model(tmp_path / "f64")
        assert {leaf.dtype for leaf in arrays(again)} == {np.dtype(np.float64)}
        for a, b in zip(arrays(again), arrays(wide), strict=True):
            np.testing.assert_array_equal(a, b)
    narrowed = load_model(tmp_path / "f64")  # without x64 JAX holds it as float32
    assert {leaf.dtype for leaf in arrays(narrowed)} == {np.dtype(np.float32)}
    for a, b in zip(arrays(narrowed), arrays(wide), strict=True):
        np.testing.assert_array_equal(a, b.astype(np.float32))


def test_a_dotted_name_is_part_of_the_model_name_not_a_suffix_to_replace(tmp_path):
    """``model.v1`` and ``model.v2`` were both written as ``model.eqx``/``model.json``: the
    second save overwrote the first, silently."""
    one = MLP(jax.random.key(0), dim=2, widths=(4,))
    two = MLP(jax.random.key(1), dim=3, widths=(4,))
    save_model(tmp_path / "model.v1", one, dim=2, widths=(4,))
    save_model(tmp_path / "model.v2", two, dim=3, widths=(4,))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.v1.eqx", "model.v1.json", "model.v2.eqx", "model.v2.json"
    ]  # fmt: skip
    for path, model in (("model.v1", one), ("model.v2", two)):
        loaded = load_model(tmp_path / path)
        assert jax.tree.all(jax.tree.map(jnp.array_equal, eqx.filter(loaded, eqx.is_array),
                                         eqx.filter(model, eqx.is_array)))  # fmt: skip
    # a path with the file's own suffix names the same pair
    assert model_files(tmp_path / "m.eqx") == model_files(tmp_path / "m")


@pytest.mark.parametrize("model", [lambda x: x, {"w": np.zeros(2)}])
def test_saving_what_is_not_an_equinox_module_names_the_model(model, tmp_path):
    # a function was "cannot be imported"; a dict "the file was not written by save_model"
    with pytest.raises(TypeError, match="model: expected an equinox.Module instance"):
        save_model(tmp_path / "m", model)
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_that_does_not_fit_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
    """A full disk made orbax's threads print dozens of tracebacks and end in a tensorstore
    message; the free space is checked first, and the error is the OS's, naming the folder."""
    import collections
    import errno

    import scorelab.checkpoints as checkpoints

    manager = open_checkpoints(tmp_path / "checkpoints")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: usage(100, 100, 0))
    with pytest.raises(OSError) as raised:
        save_checkpoint(manager, 1, {"w": jnp.ones(4)}, {})
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "checkpoints")
    assert manager.all_steps() == []


def test_checkpoint_arguments_of_another_kind_are_named(tmp_path):
    """A path where the manager goes was ``'str' object has no attribute 'latest_step'``, a
    file as the folder a manager and a logged ``NotADirectoryError``, metadata that is no
    JSON json's own ``TypeError`` (pass 19A, #10)."""
    folder = str(tmp_path / "ck")
    with pytest.raises(TypeError, match=r"^manager: expected an orbax CheckpointManager"):
        save_checkpoint(folder, 0, STATE, {})
    with pytest.raises(TypeError, match=r"^manager: expected an orbax CheckpointManager"):
        restore_checkpoint(folder, lambda metadata: STATE)
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(ValueError, match=r"afile is a file, not a folder"):
        open_checkpoints(afile)
    with pytest.raises(ValueError, match=r"afile is a file, not a folder"):
        open_checkpoints(afile / "sub")
    manager = open_checkpoints(folder)
    try:
        with pytest.raises(TypeError, match=r"^metadata: not JSON-serialisable"):
            save_checkpoint(manager, 0, STATE, {"a": object()})
        assert manager.latest_step() is None  # nothing written
    finally:
        manager.close()


def test_a_model_file_larger_than_its_record_describes_is_refused_before_reading(tmp_path):
    """A ``model.eqx`` grown to 20 GB (sparse) was read whole before its checksum was
    compared, and the machine ran out of memory (pass 20B, F2)."""
    model = MLP(jax.random.key(0), dim=2, widths=(8,))
    save_model(tmp_path / "model", model, dim=2, widths=(8,))
    assert load_model(tmp_path / "model") is not None
    leaves = tmp_path / "model.eqx"
    with open(leaves, "r+b") as handle:
        handle.truncate(20 * 2**30)
    with pytest.raises(ValueError, match=r"model.eqx: 21474836480 bytes, more than the"):
        load_model(tmp_path / "model")


def test_a_record_nesting_wrappers_past_the_limit_is_refused_before_building(tmp_path):
    """A model.json wrapping its network in 300 preconditioning records built, then overflowed
    the stack when sampled (a RecursionError traceback; pass 20A)."""
    model = MLP(jax.random.key(0), dim=2, widths=(8,))
    save_model(tmp_path / "model", model, dim=2, widths=(8,))
    spec = json.loads((tmp_path / "model.json").read_text())
    inner = {"class": spec["class"], "kwargs": spec["kwargs"]}
    for _ in range(300):
        inner = {"class": "scorelab.precond:EDMPreconditioned", "kwargs": {"network": inner}}
    (tmp_path / "model.json").write_text(json.dumps({**spec, **inner}))
    with pytest.raises(ValueError, match=r"model.json: nests more than 16 model records"):
        load_model(tmp_path / "model")


def test_a_digest_record_that_cannot_be_read_is_an_error_not_damage(two_steps, monkeypatch):
    """Another user's mode-000 file_digests.json was 'damage': --resume deleted the intact
    step and resumed from the one before, or told the user to delete the run (pass 22, #1).
    Root reads any file, so the refusal is the OS error itself."""
    from scorelab import checkpoints

    record = two_steps / "2" / "file_digests.json"
    real = checkpoints._read_digests

    def denied(folder):
        if folder.name == "2":
            raise PermissionError(13, "Permission denied", str(record))
        return real(folder)

    monkeypatch.setattr(checkpoints, "_read_digests", denied)
    manager = open_checkpoints(two_steps)
    with pytest.raises(PermissionError) as caught:
        restore_checkpoint(manager, like)
    assert caught.value.filename == str(record)
    assert manager.all_steps() == [1, 2] and record.is_file()  # nothing deleted


def test_the_file_size_and_open_file_limits_are_found_before_orbax_writes(tmp_path):
    """Under ``ulimit -f`` or a tight ``ulimit -n`` a save failed inside orbax: its threads
    printed dozens of tracebacks (some after the command's own message), the open-file case
    ended in tensorstore's RESOURCE_EXHAUSTED message, and a temporary folder stayed behind
    (session 32's pass 22). Both limits are checked first; the errors are the OS's, naming the
    folder, and nothing is printed or written. In a child process: Python ignores SIGXFSZ,
    so the size limit is an error there, as in the shell."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import errno, os, resource, sys
        import jax
        from scorelab.checkpoints import open_checkpoints, save_checkpoint
        state = {"w": jax.random.normal(jax.random.key(0), (100_000,))}
        for name, limit, code in [
            ("size", resource.RLIMIT_FSIZE, errno.EFBIG),
            ("files", resource.RLIMIT_NOFILE, errno.EMFILE),
        ]:
            manager = open_checkpoints(os.path.join(sys.argv[1], name))
            soft, hard = resource.getrlimit(limit)
            low = 100_000 if name == "size" else len(os.listdir("/proc/self/fd")) + 30
            resource.setrlimit(limit, (low, hard))
            try:
                save_checkpoint(manager, 1, state, {})
            except OSError as error:
                print(error.errno == code, error.filename == str(manager.directory))
            resource.setrlimit(limit, (soft, hard))
            print(os.listdir(manager.directory) == [])
            manager.close()  # its threads, left open, could log at interpreter shutdown
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True"] * 6, done.stdout + done.stderr
    assert done.stderr == ""


def test_a_late_tensorstore_callback_into_a_closed_loop_is_dropped_while_saving(monkeypatch):
    """A failed orbax write left tensorstore's pending writes calling back into the event loop
    orbax had closed: each reported a bare ``RuntimeError: Event loop is closed`` traceback to
    ``sys.unraisablehook`` (dozens per failure). Those, and only those, are dropped during a
    save or restore; the caller's hook is back afterwards."""
    import sys
    import types

    import scorelab.checkpoints as checkpoints

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    record = types.SimpleNamespace
    closed = record(object=None, exc_value=RuntimeError("Event loop is closed"))
    other = record(object=None, exc_value=RuntimeError("something else"))
    owned = record(object="a callback", exc_value=RuntimeError("Event loop is closed"))
    with checkpoints._orbax_threads_quiet():
        for item in (closed, other, owned):
            sys.unraisablehook(item)
    assert seen == [other, owned]
    assert sys.unraisablehook == seen.append


def test_tree_sha256_hashes_dtypes_and_shapes_with_the_bytes():
    """Equal bytes of another shape or dtype are another tree (the docstring's rule)."""
    zeros = np.zeros(4, np.float32)
    assert tree_sha256(zeros) != tree_sha256(zeros.reshape(2, 2))
    assert tree_sha256(zeros) != tree_sha256(np.zeros(4, np.int32))


def test_saved_config_is_the_newest_checkpoint_s(tmp_path):
    """A run extended on resume from 4 to 10 steps: its configuration is the last one."""
    from scorelab.checkpoints import saved_config

    for step in (4, 10):
        (tmp_path / str(step) / "metadata").mkdir(parents=True)
        record = {"config": {"train": {"steps": step}}}
        (tmp_path / str(step) / "metadata" / "metadata").write_text(json.dumps(record))
    assert saved_config(tmp_path) == {"train": {"steps": 10}}

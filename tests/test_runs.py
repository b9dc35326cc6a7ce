"""Run directories that cannot lose work: atomic writes, the JSON policy, the run lock."""

import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from _holder import held_by_another_process

from scorelab._files import expect_new, new_outputs
from scorelab.runs import (
    RunBusyError,
    RunExistsError,
    atomic_write,
    is_run,
    manifest,
    prepare_run_dir,
    read_json,
    replaced_run,
    settle,
    write_json,
)


def _no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def test_write_json_writes_non_finite_numbers_as_null(tmp_path):
    payload = {
        "finite": 1.5,
        "nan": float("nan"),
        "inf": [math.inf, -math.inf],
        "array": np.array([1.0, np.nan, np.inf], np.float32),
        "jax": jnp.array([np.nan, 2.0]),
        "scalar": np.float32("nan"),
        "tuple": (np.int64(3), "NaN stays a string"),
        "nested": {"deeper": [{"x": np.float64("-inf")}]},
    }
    path = write_json(tmp_path / "out" / "report.json", payload)
    # A strict parser: no NaN / Infinity literals anywhere.
    parsed = json.loads(path.read_text(), parse_constant=_no_constants)
    assert parsed == {
        "finite": 1.5,
        "nan": None,
        "inf": [None, None],
        "array": [1.0, None, None],
        "jax": [None, 2.0],
        "scalar": None,
        "tuple": [3, "NaN stays a string"],
        "nested": {"deeper": [{"x": None}]},
    }
    assert read_json(path) == parsed


def test_write_json_refuses_an_unknown_type_and_keeps_the_previous_file(tmp_path):
    path = write_json(tmp_path / "a.json", {"version": 1})
    with pytest.raises(TypeError, match=f"{re.escape(str(path))}: cannot be written as JSON .*"):
        write_json(path, {"version": 2, "bad": object()})
    with pytest.raises(TypeError, match="cannot be written as JSON .*keys must be"):
        write_json(path, {(1, 2): "a tuple key"})
    assert read_json(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"], "no temporary file is left"


def test_a_failing_write_leaves_the_previous_file_whole(tmp_path):
    path = atomic_write(tmp_path / "model.eqx", lambda handle: handle.write(b"previous"))

    def fails_halfway(handle):
        handle.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails_halfway)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.eqx"], "no temporary file is left"


def test_an_output_expected_new_is_not_replaced_if_another_process_wrote_it(tmp_path):
    # Two `scorelab sample --out x.npy` at once: each found x.npy absent, each renamed its file
    # over it at the end and said "written"; one result was lost (pass 13, #2).
    path = tmp_path / "x.npy"
    expect_new(path)  # outside a command's scope: nothing
    with new_outputs():
        expect_new(path)
        atomic_write(path, lambda handle: handle.write(b"first"))  # absent: written
        with pytest.raises(FileExistsError, match="another process created it"):
            atomic_write(path, lambda handle: handle.write(b"second"))
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # no temporary left
    atomic_write(path, lambda handle: handle.write(b"third"))  # the scope is over
    assert path.read_bytes() == b"third"
    dangling = tmp_path / "link.npy"  # a dangling link: its target is written
    dangling.symlink_to(tmp_path / "nowhere.npy")
    with new_outputs():
        expect_new(dangling)
        atomic_write(dangling, lambda handle: handle.write(b"new"))
    assert dangling.is_symlink() and (tmp_path / "nowhere.npy").read_bytes() == b"new"


def test_a_folder_expected_new_marks_every_file_written_below_it(tmp_path):
    # Two `plot --out NEW` at once both exited 0, and NEW held one command's figures (pass 14,
    # #6): a folder marked new refuses a file there that another process wrote meanwhile.
    folder = tmp_path / "figures"
    with new_outputs():
        expect_new(folder)
        atomic_write(folder / "a.png", lambda handle: handle.write(b"mine"))
        (folder / "b.png").write_bytes(b"theirs")
        with pytest.raises(FileExistsError, match="another process created it"):
            atomic_write(folder / "b.png", lambda handle: handle.write(b"mine"))
        atomic_write(tmp_path / "c.png", lambda handle: handle.write(b"outside"))
        atomic_write(tmp_path / "c.png", lambda handle: handle.write(b"replaced"))
    assert (folder / "b.png").read_bytes() == b"theirs"
    assert (tmp_path / "c.png").read_bytes() == b"replaced"  # not below the folder


def test_without_hard_links_an_output_expected_new_is_still_kept(tmp_path, monkeypatch):
    # vfat and some network mounts refuse os.link (EPERM): the check falls back to 'exists?
    # then rename', which still keeps another process's file found at the end.
    def no_links(source, destination):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "x.npy"
    with new_outputs():
        expect_new(path)
        atomic_write(path, lambda handle: handle.write(b"first"))  # absent: renamed in place
        with pytest.raises(FileExistsError, match="another process created it"):
            atomic_write(path, lambda handle: handle.write(b"second"))
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # no temporary left


def test_a_write_through_a_symbolic_link_replaces_its_target_not_the_link(tmp_path):
    # `sample --out link.npy --overwrite` replaced the link by a file: the target kept the old
    # samples, and whatever read it (the link's point) read stale data (pass 14, #9).
    target, link = tmp_path / "data" / "x.npy", tmp_path / "x.npy"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert atomic_write(link, lambda handle: handle.write(b"new")) == link
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.npy"]  # no temporary left


def test_a_short_write_is_a_full_disk_naming_the_file(tmp_path):
    # numpy reports a short write as "20000 requested and 12256 written", with no errno.
    def short(handle):
        raise OSError("20000 requested and 12256 written")

    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic_write(tmp_path / "x.npy", short)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "x.npy")


def test_a_write_that_cannot_start_or_finish_names_the_users_path_not_the_temporary(
    tmp_path, monkeypatch
):
    # The temporary file is an implementation detail: an error must name the path asked for
    # (`sample --out /proc/x.npy` named /proc/.x.npy.<hex>.tmp).
    real_open = os.open

    def refuses_temporaries(path, *args):
        if str(path).endswith(".tmp"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", refuses_temporaries)
        with pytest.raises(FileNotFoundError) as error:
            atomic_write(tmp_path / "x.npy", lambda handle: handle.write(b"x"))
    assert error.value.filename == str(tmp_path / "x.npy") and ".tmp" not in str(error.value)
    folder = tmp_path / "taken.npy"
    folder.mkdir()
    with pytest.raises(OSError) as error:  # a folder holds the name: the replace fails
        atomic_write(folder, lambda handle: handle.write(b"x"))
    assert error.value.filename == str(folder) and ".tmp" not in str(error.value)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.npy"], "no temporary file is left"


def test_sigkill_during_a_write_leaves_the_previous_file_whole(tmp_path):
    path = atomic_write(tmp_path / "model.eqx", lambda handle: handle.write(b"previous"))
    source = textwrap.dedent(
        f"""
        import sys, time
        from scorelab.runs import atomic_write

        def slow(handle):
            handle.write(b"the first half of the new file")
            handle.flush()
            print("writing", flush=True)
            time.sleep(600)

        atomic_write({str(path)!r}, slow)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", source], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "writing\n", process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"previous"
    # The killed write's temporary file is all that remains of it (hidden, beside the file).
    (leftover,) = [p for p in tmp_path.iterdir() if p != path]
    assert leftover.name.startswith(".model.eqx.") and leftover.suffix == ".tmp"


def test_a_run_directory_is_locked_while_in_use(tmp_path):
    run_dir = tmp_path / "run"
    with prepare_run_dir(run_dir) as locked:
        assert locked == run_dir and (run_dir / ".lock").is_file()
        (run_dir / "config.json").write_text("{}")
        # The lock is an OS lock on an open file: a second claim fails even in this process.
        with pytest.raises(RunBusyError, match=f"{run_dir} is in use by another process"):
            with prepare_run_dir(run_dir, resume=True):
                pass
    with prepare_run_dir(run_dir, resume=True):  # released on exit
        assert (run_dir / "config.json").is_file()


def test_an_existing_run_is_reused_only_when_asked(tmp_path):
    run_dir = tmp_path / "run"
    with prepare_run_dir(run_dir):  # a job killed here leaves its provisional manifest
        (run_dir / "checkpoints").mkdir()
        (run_dir / "config.json").write_text("{}")
    assert is_run(run_dir) and read_json(run_dir / "manifest.json")["provisional"] is True
    with pytest.raises(RunExistsError, match="already holds a run.*--resume.*--overwrite"):
        with prepare_run_dir(run_dir):
            pass
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        with prepare_run_dir(run_dir, resume=True, overwrite=True):
            pass
    with prepare_run_dir(run_dir, resume=True):
        assert (run_dir / "config.json").is_file()
    with prepare_run_dir(run_dir, overwrite=True):  # the old run waits aside until the end
        names = sorted(p.name for p in run_dir.iterdir())
        assert names == [".lock", ".scorelab-replaced", "manifest.json"]
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "manifest.json"]


def _old_run(run_dir):
    with prepare_run_dir(run_dir):
        (run_dir / "checkpoints" / "10").mkdir(parents=True)
        (run_dir / "checkpoints" / "10" / "state").write_text("old state")
        (run_dir / "config.json").write_text('{"old": true}')
    write_json(run_dir / "manifest.json", manifest(None))
    return _contents(run_dir)


def _contents(folder):
    return {
        str(p.relative_to(folder)): p.read_text() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
        if p.name != ".lock"
    }


def test_an_overwrite_that_fails_before_any_work_puts_the_old_run_back(tmp_path):
    # `train --out RUN --overwrite` deleted RUN's complete run first, then failed on a full disk
    # at its first checkpoint: neither run was left (pass 13, #1). The old run now waits aside
    # until the new one completes, and an orbax save that never completed is removed.
    run_dir = tmp_path / "run"
    old = _old_run(run_dir)
    with pytest.raises(OSError, match="No space"), prepare_run_dir(run_dir, overwrite=True):
        (run_dir / "checkpoints" / "5.orbax-checkpoint-tmp-1733").mkdir(parents=True)
        (run_dir / "checkpoints" / "5.orbax-checkpoint-tmp-1733" / "x").write_text("half")
        raise OSError(28, "No space left on device")
    assert _contents(run_dir) == old
    with pytest.raises(KeyboardInterrupt), prepare_run_dir(run_dir, overwrite=True):
        raise KeyboardInterrupt  # Ctrl-C while compiling
    assert _contents(run_dir) == old


def test_an_overwrite_whose_run_has_work_replaces_the_old_run_when_it_completes(tmp_path):
    """An interrupted ``demo --overwrite`` had deleted the old demo once the new one had a
    checkpoint (pass 18B, #4): the old run now waits aside until the new one completes, and a
    second overwrite deletes the unfinished run, not the one aside."""
    run_dir = tmp_path / "run"
    old = _old_run(run_dir)
    aside = run_dir / ".scorelab-replaced"
    for _ in range(2):  # interrupted after a checkpoint, then overwritten and interrupted again
        with pytest.raises(KeyboardInterrupt), prepare_run_dir(run_dir, overwrite=True):
            (run_dir / "checkpoints" / "3").mkdir(parents=True)
            raise KeyboardInterrupt
        assert replaced_run(run_dir) == aside
        assert {name.removeprefix(".scorelab-replaced/") for name in _contents(aside)} == {
            *old,
            ".moved",
        }
        new = {n for n in _contents(run_dir) if not n.startswith(".scorelab-replaced")}
        assert new == {"checkpoints", "checkpoints/3", "manifest.json"}
    settle(run_dir)  # the next claim, or settle, keeps it aside too
    with pytest.raises(RunExistsError, match="already holds a run"), prepare_run_dir(run_dir):
        pass
    assert replaced_run(run_dir) == aside
    with prepare_run_dir(run_dir, resume=True):  # the new run resumes, and completes
        pass
    assert replaced_run(run_dir) is None
    assert sorted(_contents(run_dir)) == [
        ".scorelab-written",  # its record, written as it completed
        "checkpoints",
        "checkpoints/3",
        "manifest.json",
    ]


def _killed_after_moving(run_dir, moved=None, marked=True):
    """The state a SIGKILL leaves: ``moved`` entries (default all) of the old run in the
    aside folder, marked complete or not."""
    aside = run_dir / ".scorelab-replaced"
    aside.mkdir()
    entries = sorted(p for p in run_dir.iterdir() if not p.name.startswith((".lock", ".scorelab")))
    for entry in entries if moved is None else [e for e in entries if e.name in moved]:
        entry.rename(aside / entry.name)
    if marked:
        (aside / ".moved").touch()


def test_an_overwrite_killed_outright_is_settled_by_the_next_claim(tmp_path):
    # SIGKILL inside the job: no handler ran, the old run is still aside. The next claim puts
    # it back when the new job left nothing but its provisional manifest, else keeps it aside
    # until the new run completes.
    run_dir = tmp_path / "run"
    old = _old_run(run_dir)
    _killed_after_moving(run_dir)
    write_json(run_dir / "manifest.json", manifest(None, provisional=True))
    with pytest.raises(RunExistsError, match="already holds a run"):
        with prepare_run_dir(run_dir):
            pass
    assert _contents(run_dir) == old


def test_a_move_or_restore_cut_short_is_undone_whole(tmp_path):
    # Killed half way through the move (pass 14, #3): the entries left in the folder (the old
    # run's committed checkpoint among them) were taken for new work and the rest deleted.
    run_dir = tmp_path / "run"
    old = _old_run(run_dir)
    _killed_after_moving(run_dir, moved={"model.json", "config.json"}, marked=False)
    settle(run_dir)
    assert _contents(run_dir) == old
    _killed_after_moving(run_dir, moved={"checkpoints"}, marked=False)  # a restore cut short
    with prepare_run_dir(run_dir, resume=True):
        assert _contents(run_dir) == old


@pytest.mark.slow  # about 11 s of a worker: kept out of the default suite's 15 minutes
def test_resume_after_a_killed_overwrite_finds_the_run_it_replaced(tmp_path):
    # `train --resume` looked for checkpoints before any claim settled the folder, and said
    # "no checkpoint ... replace the run with --overwrite instead" (pass 14, #2).
    from scorelab.config import ExperimentConfig
    from scorelab.workflows import train_run

    config = ExperimentConfig.from_dict(
        {"data": {"source": "two_moons", "n": 64}, "model": {"widths": [8, 8, 8]},
         "train": {"steps": 4, "batch_size": 16, "checkpoint_every": 2, "schedule": "constant",
                   "ema_decay": None}}
    )  # fmt: skip
    run_dir = tmp_path / "run"
    train_run(config, run_dir, progress=False)
    _killed_after_moving(run_dir)
    write_json(run_dir / "manifest.json", manifest(None, provisional=True))
    longer = ExperimentConfig.from_dict(
        {**config.to_dict(), "train": {**config.to_dict()["train"], "steps": 6}}
    )
    train_run(longer, run_dir, progress=False, resume=True)
    assert np.load(run_dir / "losses.npy").shape == (6,)


def test_a_failure_after_the_move_puts_the_old_run_back(tmp_path, monkeypatch):
    # A full disk for the provisional manifest, right after the move, left the old run hidden
    # in the aside folder (pass 14, #4).
    from scorelab import runs

    run_dir = tmp_path / "run"
    old = _old_run(run_dir)

    def full(path, payload):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(runs, "write_json", full)
    with pytest.raises(OSError, match="No space"), prepare_run_dir(run_dir, overwrite=True):
        pass
    assert _contents(run_dir) == old


def test_a_user_s_own_hidden_folders_in_a_run_are_kept(tmp_path):
    # A user's `.replaced/` was deleted by any claim of the run (pass 14, #5).
    run_dir = tmp_path / "run"
    _old_run(run_dir)
    (run_dir / ".replaced").mkdir()
    (run_dir / ".replaced" / "notes.txt").write_text("mine")
    with prepare_run_dir(run_dir, resume=True):
        pass
    assert (run_dir / ".replaced" / "notes.txt").read_text() == "mine"


def test_a_job_killed_before_writing_anything_leaves_a_folder_the_next_claim_takes(tmp_path):
    # The kernel's out-of-memory killer (or SIGKILL) ends a job inside its claim, before any
    # output: no handler runs, so the folder keeps the provisional manifest (and the lock file).
    run_dir = tmp_path / "run"
    with prepare_run_dir(run_dir):
        pass
    write_json(run_dir / "manifest.json", manifest(None, provisional=True))
    with prepare_run_dir(run_dir):  # neither --resume (nothing to resume) nor --overwrite
        (run_dir / "config.json").write_text("{}")
    finished = manifest(None)
    write_json(run_dir / "manifest.json", finished)  # a finished run's manifest is kept
    with pytest.raises(RunExistsError, match="already holds a run"):
        with prepare_run_dir(run_dir):
            pass


def test_a_training_interrupted_before_its_first_checkpoint_leaves_a_folder_the_next_claim_takes(
    tmp_path,
):
    # Training makes its (empty) checkpoints/ folder first: a Ctrl-C or a kill before the first
    # save left it beside the provisional manifest, and the same command was then refused with
    # "already holds a run; resume it", though there was nothing to resume.
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), prepare_run_dir(run_dir):
        (run_dir / "checkpoints").mkdir()
        raise KeyboardInterrupt
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    with prepare_run_dir(run_dir):  # killed (no handler ran): the next claim empties it
        (run_dir / "checkpoints").mkdir()
    write_json(run_dir / "manifest.json", manifest(None, provisional=True))
    with prepare_run_dir(run_dir):
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "manifest.json"]
        (run_dir / "checkpoints" / "5").mkdir(parents=True)  # a checkpoint: kept from here on
    write_json(run_dir / "manifest.json", manifest(None, provisional=True))
    with pytest.raises(RunExistsError, match="already holds a run"):
        with prepare_run_dir(run_dir):
            pass


_LOOKALIKES = {
    "diffusers model": {"config.json": "{}", "diffusion_pytorch_model.safetensors": "w"},
    "config and model": {"config.json": "{}", "model.json": "{}"},
    "sweep results": {"sweep.json": "{}", "sweep.csv": ""},
    "other manifest": {"manifest.json": '{"name": "my-app", "versions": {"app": 1}}'},
    "manifest a list": {"manifest.json": "[]"},
    "manifest not json": {"manifest.json": "{"},
}


@pytest.mark.parametrize("kind", _LOOKALIKES)
def test_overwrite_clears_only_a_folder_whose_manifest_says_scorelab(kind, tmp_path):
    """``--overwrite`` emptied any folder holding a ``config.json`` (a diffusers model, a
    Hugging Face snapshot) or another run-like name; now only a scorelab manifest will do."""
    folder = tmp_path / "out"
    folder.mkdir()
    for name, content in _LOOKALIKES[kind].items():
        (folder / name).write_text(content)
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RunExistsError, match="holds no scorelab run"):
            with prepare_run_dir(folder, **flags):
                pass
    assert {p.name: p.read_text() for p in folder.iterdir() if p.name != ".lock"} == (
        _LOOKALIKES[kind]
    )


def test_a_failed_job_leaves_its_folder_reusable_and_resume_takes_old_checkpoints(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(RuntimeError, match="job failed"):
        with prepare_run_dir(folder):
            raise RuntimeError("job failed")
    assert [p.name for p in folder.iterdir()] == [".lock"]
    with prepare_run_dir(folder):  # no --overwrite needed
        pass
    old = tmp_path / "old"  # killed before provisional manifests: checkpoints only
    (old / "checkpoints").mkdir(parents=True)
    with prepare_run_dir(old, resume=True):
        assert not (old / "manifest.json").exists()


def test_a_folder_that_is_not_a_run_is_never_cleared(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    for flags in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(RunExistsError, match="not empty and holds no scorelab run"):
            with prepare_run_dir(folder, **flags):
                pass
    assert (folder / "chapter1.tex").read_text() == "precious"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a run directory"):
        with prepare_run_dir(tmp_path / "file"):
            pass


def test_a_run_of_another_job_is_neither_resumed_nor_replaced(tmp_path):
    """``train --out DEMO --overwrite`` deleted a whole demo (three models, figures, metrics),
    after ``--resume`` had said "drop --resume" and the plain command "resume it": each job's
    manifest records the job, and another job refuses its folder whatever the flags."""
    with prepare_run_dir(tmp_path / "run", job="demo") as folder:
        (folder / "demo.json").write_text("{}")
        (folder / "manifest.json").write_text(json.dumps(manifest({}, job="demo")))
    for flags in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(RunExistsError, match="holds a scorelab demo run, not a train run"):
            with prepare_run_dir(tmp_path / "run", job="train", **flags):
                pass
    assert (tmp_path / "run" / "demo.json").is_file()
    with prepare_run_dir(tmp_path / "run", job="demo", overwrite=True):  # its own job may
        pass


def test_an_overwrite_refuses_files_the_run_did_not_write(tmp_path):
    """``train --out RUN --overwrite`` deleted a user's notes and ``sample --out RUN/mine.npy``
    without a word (pass 18). A run records the names its jobs wrote; an overwrite refuses,
    naming the others, and leaves the run as it was. A plot's ``figures`` goes with the run."""
    run_dir = tmp_path / "run"
    _old_run(run_dir)
    assert read_json(run_dir / ".scorelab-written") == ["checkpoints", "config.json"]
    (run_dir / "figures").mkdir()
    (run_dir / "NOTES.txt").write_text("mine")
    (run_dir / "mine.npy").write_text("samples")
    before = _contents(run_dir)
    message = (
        rf"^{re.escape(str(run_dir))}: --overwrite would delete NOTES.txt, mine.npy, which the "
        "run did not write; move them out"
    )
    with pytest.raises(RunExistsError, match=message), prepare_run_dir(run_dir, overwrite=True):
        raise AssertionError("the claim was refused")
    assert _contents(run_dir) == before
    (run_dir / "NOTES.txt").unlink()
    (run_dir / "mine.npy").unlink()
    with prepare_run_dir(run_dir, overwrite=True):
        (run_dir / "model.eqx").write_text("new")
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".lock") == [
        ".scorelab-written",
        "manifest.json",
        "model.eqx",
    ]


def test_a_resumed_run_records_what_it_wrote_beside_what_was_there(tmp_path):
    """A resume adds the names it wrote to the record; a file added between the jobs stays
    the user's, and a run without a record (an older one) is the run's whole, as before."""
    run_dir = tmp_path / "run"
    _old_run(run_dir)
    (run_dir / "NOTES.txt").write_text("mine")
    with prepare_run_dir(run_dir, resume=True):
        (run_dir / "losses.npy").write_text("more")
    written = read_json(run_dir / ".scorelab-written")
    assert "losses.npy" in written and "NOTES.txt" not in written
    (run_dir / ".scorelab-written").unlink()
    with prepare_run_dir(run_dir, resume=True):
        pass
    assert "NOTES.txt" in read_json(run_dir / ".scorelab-written")
    with prepare_run_dir(run_dir, overwrite=True):
        (run_dir / "model.eqx").write_text("new")
    assert not (run_dir / "NOTES.txt").exists()


def test_a_file_a_run_recorded_writing_is_its_own(tmp_path):
    """``evaluate --json DEMO/demo.json --overwrite`` replaced a demo's record, after which
    ``plot`` could not read the demo (pass 18B, #1b): the names a run's jobs recorded are its
    files, as :data:`RUN_FILES` are; a plot's ``figures`` and a stranger's file are not."""
    from scorelab.runs import owning_run

    run_dir = tmp_path / "demo"
    with prepare_run_dir(run_dir, job="demo"):
        (run_dir / "demo.json").write_text("{}")
        (run_dir / "figures").mkdir()
    (run_dir / "mine.json").write_text("{}")
    assert owning_run(run_dir / "demo.json") == run_dir
    assert owning_run(run_dir / "manifest.json") == run_dir
    assert owning_run(run_dir / "figures") is None and owning_run(run_dir / "mine.json") is None


def test_an_interrupted_overwrite_says_where_the_replaced_run_waits(tmp_path):
    """The line of an interrupted ``--overwrite`` names the folder that keeps the run it
    replaces, so that a user who wanted it back finds it."""
    import argparse

    from scorelab.cli import _interrupted

    run_dir = tmp_path / "run"
    _old_run(run_dir)
    with pytest.raises(KeyboardInterrupt), prepare_run_dir(run_dir, overwrite=True):
        (run_dir / "checkpoints" / "3").mkdir(parents=True)
        raise KeyboardInterrupt
    args = argparse.Namespace(command="demo", out=str(run_dir), overwrite=True)
    line = _interrupted(args, KeyboardInterrupt())
    assert line.endswith(
        f"; the run it replaces is kept in {run_dir / '.scorelab-replaced'} until this one "
        "completes"
    )
    assert "kept in" not in _interrupted(argparse.Namespace(command="demo"), KeyboardInterrupt())


def test_a_run_another_process_writes_is_named_busy_by_resume_and_readers(tmp_path):
    """``train --resume`` on a run another train was writing said "no checkpoint ... replace
    the run with --overwrite instead", and ``sample --run`` "not a scorelab run directory ...
    check the path and the disk" (pass 19B, #4): both say it is in use. A folder never
    claimed gets no lock file from the check."""
    from scorelab.runs import busy, check_not_busy, load_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert not busy(run_dir) and not (run_dir / ".lock").exists()
    with held_by_another_process(run_dir):
        assert busy(run_dir)
        with pytest.raises(RunBusyError, match=r"in use by another process"):
            check_not_busy(run_dir)
        with pytest.raises(RunBusyError, match=r"in use by another process"):
            load_run(run_dir)
    assert not busy(run_dir)


def test_a_user_s_file_beside_a_killed_replacement_is_neither_work_nor_deleted(tmp_path):
    """``train --overwrite`` killed outright while ``sample --out RUN/mine.npy`` wrote into the
    run: the user's file was taken for the new run's work, the old run stayed hidden aside,
    and the next ``--overwrite`` deleted both (pass 19B, #1). The old run comes back, and an
    overwrite refuses the file, with or without the new run's work."""
    run_dir = tmp_path / "run"
    old = _old_run(run_dir)
    _killed_after_moving(run_dir)
    write_json(run_dir / "manifest.json", manifest(None, provisional=True))
    (run_dir / "mine.npy").write_text("mine")
    from scorelab.runs import load_run

    with pytest.raises(ValueError) as reading:  # a reader settles it first: the old run is back
        load_run(run_dir)
    assert "no config.json" not in str(reading.value) and replaced_run(run_dir) is None
    with pytest.raises(RunExistsError, match="already holds a run"), prepare_run_dir(run_dir):
        pass
    assert replaced_run(run_dir) is None
    assert _contents(run_dir) == {**old, "mine.npy": "mine"}
    with pytest.raises(RunExistsError, match=r"would delete mine\.npy, which the run did not"):
        with prepare_run_dir(run_dir, overwrite=True):
            pass
    # the new run has work, and the file was written beside it
    (run_dir / "mine.npy").unlink()
    with pytest.raises(KeyboardInterrupt), prepare_run_dir(run_dir, overwrite=True):
        (run_dir / "checkpoints" / "3").mkdir(parents=True)
        raise KeyboardInterrupt
    (run_dir / "mine.npy").write_text("mine")
    with pytest.raises(RunExistsError, match=r"would delete mine\.npy, which the run did not"):
        with prepare_run_dir(run_dir, overwrite=True):
            pass
    assert (run_dir / "mine.npy").read_text() == "mine" and replaced_run(run_dir) is not None


def test_a_run_folder_that_is_a_link_to_nothing_is_named_so(tmp_path):
    """``train --out LINK`` with LINK a dangling symbolic link said "cannot create the folder
    (File exists)" (pass 19B, #8)."""
    link = tmp_path / "dl"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"dl is a symbolic link to .*nowhere, which does not"):
        with prepare_run_dir(link):
            pass


def test_a_replaced_run_that_cannot_be_deleted_is_left_with_a_warning(tmp_path, monkeypatch):
    """A replaced run holding another user's files (not deletable) ended a finished
    ``train --overwrite`` in "_sharding: Permission denied", and every later claim of the
    folder the same way (pass 22, #2): the new run stands, the leftover folder is named."""
    from scorelab import runs

    run_dir = tmp_path / "run"
    _old_run(run_dir)
    monkeypatch.setattr(runs.shutil, "rmtree", lambda path, ignore_errors=False: None)
    dropped = re.escape(str(run_dir / ".scorelab-dropped"))
    with pytest.warns(UserWarning, match=rf"^{dropped}: the replaced run's files could not"):
        with prepare_run_dir(run_dir, overwrite=True):
            (run_dir / "config.json").write_text('{"new": true}')
            write_json(run_dir / "manifest.json", manifest(None))
    assert (run_dir / "config.json").read_text() == '{"new": true}'
    assert json.loads((run_dir / ".scorelab-written").read_text()) == ["config.json"]
    with pytest.warns(UserWarning, match="could not all be deleted"):
        with prepare_run_dir(run_dir, resume=True):  # a later claim goes on
            pass
    with pytest.warns(UserWarning, match="could not all be deleted"):
        with prepare_run_dir(run_dir, overwrite=True):  # the leftovers' names are taken: no clash
            (run_dir / "config.json").write_text('{"newer": true}')
    assert (run_dir / "config.json").read_text() == '{"newer": true}'


def test_a_write_past_the_file_size_limit_names_the_file_and_the_limit(tmp_path):
    """Under ``ulimit -f`` a write failed when the file was closed (the rest of its buffer),
    whose error named no file ("File too large; check the path and the disk"), and numpy's
    short write was called a full disk (pass 22, #4 and #6). In a child process: Python
    ignores SIGXFSZ, so the limit is an error there, as in the shell."""
    script = textwrap.dedent(
        """
        import errno, resource, sys
        import numpy as np
        from scorelab._files import atomic_write
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
        for name, write in [("a.bin", lambda h: h.write(b"x" * 3000)),
                            ("b.npy", lambda h: np.save(h, np.zeros(5000)))]:
            path = sys.argv[1] + "/" + name
            try:
                atomic_write(path, write)
            except OSError as error:
                print(error.errno == errno.EFBIG, error.filename == path)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True"] * 4, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary left


def test_the_memory_check_counts_an_address_space_limit(tmp_path):
    """Under ``ulimit -v`` the check counted the host's memory ('22.4 GiB needed, 17.2
    available' under a 4 GB limit), and the allocation crashed (pass 22, #5)."""
    script = textwrap.dedent(
        """
        import resource
        from scorelab._validate import _proc_kib, available_memory
        size = _proc_kib("/proc/self/status", "VmSize:")
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (size + 2**28, hard))
        print(0 < available_memory() <= 2**28)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True", done.stdout + done.stderr


def test_a_command_that_fails_removes_the_new_outputs_it_wrote(tmp_path):
    """``sample --out x.npy --trajectory t.npy`` wrote x.npy, then found the disk full for
    t.npy; the rerun its error asked for was refused ("x.npy: exists; pass --overwrite"), and
    ``plot`` left half a new folder the same way (pass 22, #7). A file the command did not
    create (replaced with --overwrite, unmarked) or another process's is not touched."""
    new, figures, replaced = tmp_path / "x.npy", tmp_path / "figs", tmp_path / "old.npy"
    replaced.write_bytes(b"old")
    with pytest.raises(OSError, match="full"), new_outputs():
        expect_new(new)
        expect_new(figures)
        atomic_write(new, lambda handle: handle.write(b"samples"))
        atomic_write(figures / "loss.png", lambda handle: handle.write(b"png"))
        atomic_write(replaced, lambda handle: handle.write(b"new"))
        (figures / "theirs.png").write_bytes(b"another process's")
        raise OSError(errno.ENOSPC, "the disk is full")
    assert not new.exists() and sorted(p.name for p in figures.iterdir()) == ["theirs.png"]
    assert replaced.read_bytes() == b"new"  # replaced as asked: not the command's to remove


def test_a_disk_without_a_free_block_is_found_before_the_work(tmp_path, monkeypatch):
    """An empty file fits on a full disk, so the check before the work passed, and ``grid``
    and ``score-error`` computed, then failed to write (pass 22, #8)."""
    from scorelab._files import check_writable

    real = os.statvfs(tmp_path)
    full = os.statvfs_result((*real[:3], 0, 0, *real[5:]))  # f_bfree, f_bavail
    monkeypatch.setattr(os, "statvfs", lambda path: full)
    with pytest.raises(OSError) as caught:
        check_writable(tmp_path / "x.json")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_report_keeps_the_outputs_written_before_it(tmp_path):
    """``scorelab sample ... | head`` whose reader is gone wrote its samples, then failed to
    print: the samples stay (an error of the report stream is not the work's)."""
    path = tmp_path / "x.npy"
    with pytest.raises(BrokenPipeError), new_outputs(report="standard output"):
        expect_new(path)
        atomic_write(path, lambda handle: handle.write(b"samples"))
        raise BrokenPipeError(errno.EPIPE, "Broken pipe", "standard output")
    assert path.read_bytes() == b"samples"


# --- pinned by mutation pass 34 --------------------------------------------------------------


def test_an_mlp_takes_an_image_flattened():
    """An MLP's ``dim`` is the pixels of an example, C*H*W (64 for the digits), not its last
    axis (8): a mutant taking that refused every MLP trained on images."""
    from scorelab.config import ExperimentConfig
    from scorelab.runs import model_data_mismatch

    config = ExperimentConfig.from_dict({"data": {"source": "digits"}})
    assert model_data_mismatch(config, {"dim": 64}) is None
    assert model_data_mismatch(config, {"dim": 8}) == (64, 8)


def _checkpoint_config(folder, config):
    (folder / "metadata").mkdir(parents=True)
    (folder / "metadata" / "metadata").write_text(json.dumps({"config": config}))


def test_a_damaged_config_json_falls_back_to_the_newest_checkpoint_s(tmp_path):
    """config.json that is JSON but not ``{section: {...}}``: the documented fallback."""
    from scorelab.runs import resumed_config

    (tmp_path / "config.json").write_text("[1, 2]")
    _checkpoint_config(tmp_path / "checkpoints" / "4", {"train": {"steps": 4}})
    assert resumed_config(tmp_path) == {"train": {"steps": 4}}


def test_an_unfinished_orbax_save_is_not_a_checkpoint(tmp_path):
    """orbax writes into ``STEP.orbax-checkpoint-tmp-N`` and renames it when done: a save cut
    short leaves only that folder, which holds nothing to resume from."""
    from scorelab.runs import has_checkpoints

    (tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1").mkdir(parents=True)
    assert not has_checkpoints(tmp_path)
    (tmp_path / "checkpoints" / "4").mkdir()
    assert has_checkpoints(tmp_path)


def test_a_loss_history_with_some_finite_losses_is_read(tmp_path):
    """Only a history without any finite loss is damage (training stops at the first
    non-finite one, which the history keeps)."""
    from scorelab.runs import read_losses

    np.save(tmp_path / "losses.npy", np.array([1.0, np.nan, 0.5], np.float32))
    assert read_losses(tmp_path).shape == (3,)

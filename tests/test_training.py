"""Tests of scorelab.training and scorelab.checkpoints.

One small reference run (a tiny MLP trained with DSM on a 2-D Gaussian, checkpointed) is shared
by most tests: the same run must come out of K=1 dispatches, of a resume from an earlier
checkpoint, of a resume after SIGKILL, and (within float tolerance) of 4 devices.
"""

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import replace
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _damage import flip_a_bit
from _interrupt import interrupt_at

from scorelab.checkpoints import load_model, open_checkpoints, save_model
from scorelab.losses import dsm_loss
from scorelab.models import MLP
from scorelab.runs import RunBusyError, prepare_run_dir
from scorelab.targets import gaussian
from scorelab.training import (
    NonFiniteLossError,
    TrainConfig,
    TrainingInterrupted,
    _run_slots,
    make_optimizer,
    train,
)

TESTS_DIR = Path(__file__).parent
MEAN = np.array([1.0, -2.0])
COVARIANCE = np.array([[2.0, 0.5], [0.5, 1.0]])
WIDTHS = (16, 16, 16)
# 24 steps in dispatches of 7 (the last one partial); batch 32 is divisible by 4 devices.
CONFIG = TrainConfig(
    steps=24, learning_rate=1e-2, batch_size=32, steps_per_dispatch=7, ema_decay=0.9
)
LOSS_FN = functools.partial(dsm_loss, sigma=1.0)


def gaussian_samples(seed, n, covariance=COVARIANCE):
    """``n`` samples of N(MEAN, covariance) as float32 ``(n, 2)`` (NumPy: no compilation)."""
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(MEAN, covariance, size=n).astype(np.float32)


def problem():
    """The reference problem: (data (256, 2), initial model). Also imported by subprocesses."""
    return gaussian_samples(1, 256), MLP(jax.random.key(2), dim=2, widths=WIDTHS)


def run(config=CONFIG, **kwargs):
    data, model = problem()
    return train(jax.random.key(0), model, LOSS_FN, data, config, progress=False, **kwargs)


def arrays(model):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def assert_same_run(result, reference):
    """Bitwise equality of parameters, EMA parameters and the whole loss history."""
    for a, b in zip(arrays(result.model), arrays(reference.model), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(arrays(result.ema_model), arrays(reference.ema_model), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(result.losses, reference.losses)


def run_script(body: str, env=None, **popen_kwargs):
    """Start ``python -c`` with the reference problem importable as ``test_training``."""
    source = f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n" + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", source],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen_kwargs,
    )


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """The reference run on 4 forced CPU devices, in a subprocess: ``(process, output .npz)``.

    Also checks there that a batch size not divisible by 4 is refused.
    """
    output = tmp_path_factory.mktemp("four_devices") / "result.npz"
    process = run_script(
        f"""
        import jax, numpy as np, pytest
        from test_training import CONFIG, arrays, replace, run
        assert len(jax.devices()) == 4
        result = run()
        with pytest.raises(ValueError, match="batch_size.*not divisible by the 4 devices"):
            run(replace(CONFIG, batch_size=6))
        np.savez({str(output)!r}, losses=result.losses, *arrays(result.model))
        """,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"},
    )
    yield process, output
    if process.poll() is None:
        process.kill()
    process.wait()
    # Close the pipes even when no test on this xdist worker read them (ResourceWarning).
    process.stdout.close()
    process.stderr.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, four_devices):
    """The reference run, checkpointed every 5 steps (dispatches of 5, 5, 5, 5, 4 steps).

    Requests ``four_devices`` only to start that subprocess first, so it runs alongside.
    """
    out_dir = tmp_path_factory.mktemp("reference")
    config = replace(CONFIG, checkpoint_every=5)
    return run(config, out_dir=out_dir), out_dir


@eqx.filter_jit
def held_out_losses(model, x_0):
    """Per-example DSM losses of ``model`` on ``x_0`` ``(n, 2)`` with fixed keys, ``(n,)``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(len(x_0)))
    return jax.vmap(lambda k, x: LOSS_FN(k, model, x))(keys, x_0)


def test_loss_decreases(reference):
    result, _ = reference
    _, initial = problem()
    # Same examples and noise for both models (common random numbers), so the paired
    # difference has a small standard error; require a decrease of more than 5 of them.
    x_0 = gaussian_samples(3, 4096)
    decrease = np.asarray(held_out_losses(initial, x_0) - held_out_losses(result.model, x_0))
    standard_error = decrease.std(ddof=1) / np.sqrt(decrease.size)
    assert decrease.mean() > 5 * standard_error


def test_loss_history_follows_the_documented_keys(reference):
    # losses[0] is the mean loss of the initial model on the batch drawn as documented:
    # fold_in(key, 0) -> (batch key, loss key); indices randint(batch key, (B,), 0, n);
    # example b gets fold_in(loss key, b).
    result, _ = reference
    data, initial = problem()
    batch_key, loss_key = jax.random.split(jax.random.fold_in(jax.random.key(0), 0))
    x_0 = data[np.asarray(jax.random.randint(batch_key, (CONFIG.batch_size,), 0, len(data)))]
    keys = jax.vmap(lambda b: jax.random.fold_in(loss_key, b))(jnp.arange(CONFIG.batch_size))
    expected = np.mean(eqx.filter_jit(jax.vmap(LOSS_FN, in_axes=(0, None, 0)))(keys, initial, x_0))
    np.testing.assert_allclose(result.losses[0], expected, rtol=1e-5)
    assert result.losses.shape == (CONFIG.steps,) and np.isfinite(result.losses).all()


def test_steps_per_dispatch_does_not_change_the_run(reference, capsys):
    # Step i draws everything from fold_in(key, i): fusing 1 or 7 steps per dispatch (and the
    # reference's checkpoint-aligned dispatches) gives bitwise the same run.
    data, model = problem()
    config = replace(CONFIG, steps_per_dispatch=1)
    result = train(jax.random.key(0), model, LOSS_FN, data, config, progress=True)
    assert_same_run(result, reference[0])
    bar = capsys.readouterr().err  # tqdm: steps done, rate (step/s or s/step), mean loss
    assert "24/24" in bar and "step" in bar and "loss=" in bar


@pytest.mark.parametrize("length", [1, 3])
def test_an_unrolled_dispatch_is_straight_line_code(length):
    # TrainConfig.unroll promises no loop in the program, at every dispatch length: a loop body
    # is where XLA:CPU compiles a network's backward convolutions to its slow generic emitter
    # (benchmarks/loop_convolutions.py). lax.scan(unroll=True) of length 1 reads unroll=1 and
    # emits a one-trip while loop, which is how `train` ran a U-Net 60x slower than its
    # gradient at top level in dispatches of one step.
    def body(carry, slot):
        return 2.0 * carry + slot, jnp.sum(carry)

    carry = jnp.arange(3.0)
    rolled = str(jax.make_jaxpr(lambda c: _run_slots(body, c, length, False))(carry))
    unrolled = str(jax.make_jaxpr(lambda c: _run_slots(body, c, length, True))(carry))
    assert "scan[" in rolled  # the check sees a loop where there is one
    assert "scan[" not in unrolled and "while[" not in unrolled
    for a, b in zip(
        jax.tree.leaves(_run_slots(body, carry, length, True)),
        jax.tree.leaves(_run_slots(body, carry, length, False)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_unroll_in_dispatches_of_one_step_gives_the_rolled_run_bitwise(reference):
    # One step per dispatch, straight-line: the program is the rolled loop's body without the
    # loop, so the same run to the bit. (Longer unrolled dispatches let XLA fuse across steps,
    # which may change the last bits, as TrainConfig.unroll says.)
    assert_same_run(run(replace(CONFIG, unroll=True, steps_per_dispatch=1)), reference[0])


@pytest.mark.parametrize(
    ("schedule", "warmup_steps", "expected"),
    [
        ("constant", 0, lambda i: np.full_like(i, 0.1)),
        ("cosine", 0, lambda i: 0.05 * (1 + np.cos(np.pi * i / 10))),
        (
            "warmup_cosine",
            4,
            lambda i: np.where(i < 4, 0.1 * i / 4, 0.05 * (1 + np.cos(np.pi * (i - 4) / 6))),
        ),
    ],
)
def test_learning_rate_schedules_match_their_closed_forms(schedule, warmup_steps, expected):
    # With SGD and a unit gradient, the update of step i is -eta_i.
    config = TrainConfig(
        steps=10, learning_rate=0.1, optimizer="sgd", schedule=schedule, warmup_steps=warmup_steps
    )
    optimizer = make_optimizer(config)
    theta = jnp.zeros(())
    state, rates = optimizer.init(theta), []
    for _ in range(10):
        update, state = optimizer.update(jnp.ones(()), state, theta)
        rates.append(-float(update))
    np.testing.assert_allclose(rates, expected(np.arange(10.0)), rtol=1e-6, atol=1e-8)


def test_gradient_clipping_and_decoupled_weight_decay():
    theta, gradient = jnp.array([3.0, 4.0]), jnp.array([30.0, 40.0])  # |gradient| = 50
    clipped = make_optimizer(TrainConfig(learning_rate=0.1, optimizer="sgd", grad_clip=5.0))
    update, _ = clipped.update(gradient, clipped.init(theta), theta)
    np.testing.assert_allclose(update, -0.1 * gradient * 5.0 / 50.0, rtol=1e-6)
    # AdamW with a zero gradient moves theta only by the decay: -eta * lambda * theta.
    adamw = make_optimizer(TrainConfig(learning_rate=0.1, optimizer="adamw", weight_decay=0.5))
    update, _ = adamw.update(jnp.zeros(2), adamw.init(theta), theta)
    np.testing.assert_allclose(update, -0.1 * 0.5 * theta, rtol=1e-6)


def test_resume_from_an_earlier_checkpoint_equals_the_uninterrupted_run(reference, tmp_path):
    result, out_dir = reference
    assert sorted(int(p.name) for p in out_dir.iterdir() if p.name.isdigit()) == [15, 20, 24]
    # Pretend the run stopped after step 15: drop the later checkpoints, then resume.
    shutil.copytree(out_dir, tmp_path / "run")
    for step in ("20", "24"):
        shutil.rmtree(tmp_path / "run" / step)
    resumed = run(out_dir=tmp_path / "run", resume=True)
    assert resumed.start_step == 15
    assert_same_run(resumed, result)  # bitwise


@pytest.mark.slow  # trains in a child process twice
def test_resume_after_sigkill_equals_the_uninterrupted_run(reference, tmp_path):
    # A checkpoint after every step, one step per dispatch: the kill lands mid-run, possibly
    # during a checkpoint write, which orbax must leave unfinalised.
    out_dir = tmp_path / "killed"
    process = run_script(
        f"""
        from test_training import CONFIG, replace, run
        config = replace(CONFIG, checkpoint_every=1, steps_per_dispatch=1)
        run(config, out_dir={str(out_dir)!r})
        """
    )
    deadline = time.monotonic() + 300
    while not (out_dir.is_dir() and any(p.name.isdigit() for p in out_dir.iterdir())):
        if process.poll() is not None:
            pytest.fail(f"training subprocess exited early:\n{process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail("no checkpoint appeared within 300 s")
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    latest = open_checkpoints(out_dir).latest_step()
    assert latest is not None and latest < CONFIG.steps, "the kill must interrupt the run"

    resumed = run(out_dir=out_dir, resume=True)
    assert resumed.start_step == latest
    assert_same_run(resumed, reference[0])  # bitwise


def test_an_interrupt_checkpoints_the_finished_steps_and_resume_ends_as_uninterrupted(
    reference, tmp_path, monkeypatch
):
    # CONFIG checkpoints only at the end: the interrupt after the second dispatch (step 14)
    # finds no checkpoint on disk and must write one, or the run's 14 steps are lost.
    out_dir = tmp_path / "interrupted"
    interrupt_at(monkeypatch, 14)
    with pytest.raises(TrainingInterrupted, match="after 14 of 24 steps") as caught:
        run(out_dir=out_dir)
    assert (caught.value.step, caught.value.last_checkpoint) == (14, 14)
    assert open_checkpoints(out_dir).all_steps() == [14]
    monkeypatch.undo()
    resumed = run(out_dir=out_dir, resume=True)
    assert resumed.start_step == 14
    assert_same_run(resumed, reference[0])  # bitwise


def test_an_interrupt_as_a_periodic_checkpoint_is_written_keeps_that_checkpoint(
    reference, tmp_path, monkeypatch
):
    # The interrupt arrives as the save of step 15 returns, before the loop records it: the
    # checkpoint on disk is kept, not written twice.
    import scorelab.checkpoints

    save = scorelab.checkpoints.save_checkpoint

    def save_then_interrupt(manager, step, state, metadata):
        save(manager, step, state, metadata)
        if step == 15:
            raise KeyboardInterrupt

    monkeypatch.setattr(scorelab.checkpoints, "save_checkpoint", save_then_interrupt)
    out_dir = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted) as caught:
        run(replace(CONFIG, checkpoint_every=5), out_dir=out_dir)
    assert (caught.value.step, caught.value.last_checkpoint) == (15, 15)
    assert open_checkpoints(out_dir).all_steps() == [5, 10, 15]
    monkeypatch.undo()
    assert_same_run(run(out_dir=out_dir, resume=True), reference[0])


def test_an_interrupt_without_an_out_dir_says_nothing_was_kept(monkeypatch):
    interrupt_at(monkeypatch, 7)
    with pytest.raises(TrainingInterrupted, match="after 7 of 24 steps; no checkpoint"):
        run()


def test_four_devices_give_the_one_device_parameters(reference, four_devices):
    process, output = four_devices
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    four = np.load(output)
    reference_arrays = arrays(reference[0].model)
    # The batch mean is summed in a different order on 4 devices (float32 all-reduce), so the
    # runs may differ by rounding, grown over 24 Adam steps. Measured: max parameter difference
    # 1.2e-7 (1 ulp at |theta| ~ 1), max relative loss difference 2e-7. Tolerances: 1e-5,
    # about 100 ulps, far below the 1e-2 a single Adam step moves a parameter.
    for index, expected in enumerate(reference_arrays):
        np.testing.assert_allclose(four[f"arr_{index}"], expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(four["losses"], reference[0].losses, rtol=1e-5)


class Shift(eqx.Module):
    """Toy score model ``score_fn(x, sigma) = b``: with a linear loss, SGD moves ``b`` on a line."""

    b: jax.Array

    def __call__(self, x, sigma=None):
        return self.b


def _train_shift(config, theta_0, c):
    """Train ``Shift(theta_0)`` on the loss ``-c.b``: SGD's iterates are theta_0 + j eta c."""
    return train(
        jax.random.key(0),
        Shift(jnp.asarray(theta_0, dtype=jnp.float32)),
        lambda key, score_fn, x: -jnp.dot(jnp.asarray(c, jnp.float32), score_fn(x, None)),
        np.zeros((4, 2)),
        config,
        progress=False,
    )


def test_ema_matches_its_closed_form():
    # loss = -c.b, so SGD gives theta_j = theta_0 + j eta c exactly, and the EMA
    # ema_k = beta^k theta_0 + (1 - beta) sum_{j=1}^k beta^(k-j) theta_j has the closed form
    # ema_k = theta_0 + eta c (k (1 - beta) - beta (1 - beta^k)) / (1 - beta).
    c, theta_0, eta, beta, k = np.array([1.0, -2.0]), np.array([0.5, 0.25]), 0.1, 0.8, 10
    config = TrainConfig(steps=k, learning_rate=eta, optimizer="sgd", ema_decay=beta)
    result = _train_shift(config, theta_0, c)
    np.testing.assert_allclose(result.model.b, theta_0 + k * eta * c, rtol=1e-6)
    expected = theta_0 + eta * c * (k * (1 - beta) - beta * (1 - beta**k)) / (1 - beta)
    np.testing.assert_allclose(result.ema_model.b, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("beta", "k", "per_dispatch"),
    [(0.8, 10, 3), (0.999, 7, 7), (float(np.float32(0.99999994)), 3, 2)],
)
def test_debiased_ema_is_the_weighted_mean_of_the_iterates_alone(beta, k, per_dispatch):
    """With ``ema_debias`` the average is sum_j (1 - beta) beta^(k-j) theta_j / (1 - beta^k)
    over the iterates theta_1..theta_k (Adam's correction of an average started at 0): no
    share of theta_0, across dispatches, and at a decay 6e-8 from 1 (where 1 - beta^k in
    float32 has no digit left) the plain mean of the iterates."""
    c, theta_0, eta = np.array([1.0, -2.0]), np.array([0.5, 0.25]), 0.1
    config = TrainConfig(
        steps=k, learning_rate=eta, optimizer="sgd", ema_decay=beta, ema_debias=True,
        steps_per_dispatch=per_dispatch,
    )  # fmt: skip
    result = _train_shift(config, theta_0, c)
    j = np.arange(1, k + 1)
    weights = (1 - beta) * beta ** (k - j) / -np.expm1(k * np.log(beta))  # sum to 1
    iterates = theta_0 + np.outer(j, eta * c)  # theta_j = theta_0 + j eta c, exactly
    np.testing.assert_allclose(result.ema_model.b, weights @ iterates, rtol=2e-6)
    assert abs(weights.sum() - 1) < 1e-12


def test_debiasing_needs_a_moving_average():
    with pytest.raises(ValueError, match="^ema_debias: true corrects a moving average, and ema"):
        TrainConfig(ema_debias=True)
    with pytest.raises(ValueError, match="^ema_debias: expected true or false, got 1"):
        TrainConfig(ema_decay=0.9, ema_debias=1)


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # SGD moves b[0] by 0.1 per step; the loss turns NaN once b[0] > 0.45, i.e. at step 5.
    def loss_fn(key, score_fn, x):
        b = score_fn(x, None)
        return jnp.where(b[0] > 0.45, jnp.nan, -jnp.sum(b))

    config = TrainConfig(
        steps=20, learning_rate=0.1, optimizer="sgd", steps_per_dispatch=3, checkpoint_every=2
    )
    with pytest.raises(NonFiniteLossError, match="step 5.*learning_rate.*grad_clip") as error:
        train(
            jax.random.key(0),
            Shift(jnp.zeros(2)),
            loss_fn,
            np.zeros((4, 2)),
            config,
            out_dir=tmp_path,
            progress=False,
        )
    assert error.value.step == 5 and error.value.last_checkpoint == 4
    assert error.value.losses.shape == (5,) and np.isfinite(error.value.losses).all()
    assert open_checkpoints(tmp_path).latest_step() == 4


def test_resume_refuses_a_different_run_and_overwriting(reference, tmp_path):
    _, out_dir = reference
    shutil.copytree(out_dir, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds checkpoints.*resume=True"):
        run(out_dir=tmp_path / "run")
    different = replace(CONFIG, learning_rate=1e-3)
    with pytest.raises(ValueError, match="config differs.*learning_rate"):
        run(different, out_dir=tmp_path / "run", resume=True)
    data, model = problem()
    with pytest.raises(ValueError, match="key differs"):
        train(jax.random.key(1), model, LOSS_FN, data, CONFIG, out_dir=tmp_path / "run",
              resume=True, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"data differ.*\(128, 2\) here\); restore the data"):
        train(jax.random.key(0), model, LOSS_FN, data[:128], CONFIG, out_dir=tmp_path / "run",
              resume=True, progress=False)  # fmt: skip
    # the same shape, other values: it showed two equal shapes as the difference
    with pytest.raises(ValueError, match=r"data differ from .* \(the values of \(256, 2\)\)"):
        train(jax.random.key(0), model, LOSS_FN, data + 1, CONFIG, out_dir=tmp_path / "run",
              resume=True, progress=False)  # fmt: skip
    with jax.enable_x64(True), pytest.raises(ValueError, match="data differ.*jax_enable_x64"):
        train(jax.random.key(0), model, LOSS_FN, data[:128], CONFIG, out_dir=tmp_path / "run",
              resume=True, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="resume=True needs the out_dir"):
        run(resume=True)


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(reference, tmp_path):
    result, out_dir = reference
    shutil.copytree(out_dir, tmp_path / "damaged")
    flip_a_bit(tmp_path / "damaged" / "24")
    with pytest.warns(UserWarning, match="step 24: .*resuming from step 20, the newest intact"):
        resumed = run(out_dir=tmp_path / "damaged", resume=True)
    assert resumed.start_step == 20
    shutil.copytree(out_dir, tmp_path / "from_20")
    shutil.rmtree(tmp_path / "from_20" / "24")
    assert_same_run(resumed, run(out_dir=tmp_path / "from_20", resume=True))  # bitwise
    assert_same_run(resumed, result)


def test_a_constant_schedule_run_may_be_extended_on_resume(reference, tmp_path):
    # The 24-step reference continued to 30 steps is the uninterrupted 30-step run.
    shutil.copytree(reference[1], tmp_path / "run")
    longer = replace(CONFIG, steps=30)
    extended = run(longer, out_dir=tmp_path / "run", resume=True)
    assert extended.start_step == 24
    assert_same_run(extended, run(longer))  # bitwise
    with pytest.raises(ValueError, match="train.steps = 20 is below the checkpointed step 30"):
        run(replace(CONFIG, steps=20), out_dir=tmp_path / "run", resume=True)


def linear_loss(key, score_fn, x):
    """``-sum(b)`` for :class:`Shift`: SGD moves ``b`` by the learning rate every step."""
    return -jnp.sum(score_fn(x, None))


def test_resume_compares_the_whole_configuration(tmp_path):
    config = TrainConfig(steps=4, learning_rate=0.1, optimizer="sgd", checkpoint_every=2)
    run_config = {"data": {"source": "two_moons", "n": 4}, "loss": {"name": "dsm", "sigma": 1.0}}

    def fit(config, out_dir, run_config, resume=False):
        return train(jax.random.key(0), Shift(jnp.zeros(2)), linear_loss, np.zeros((4, 2)),
                     config, out_dir=out_dir, resume=resume, progress=False,
                     run_config=run_config)  # fmt: skip

    fit(config, tmp_path / "run", run_config)
    changed = {**run_config, "loss": {"name": "dsm", "sigma": 2.0}}
    with pytest.raises(ValueError, match=r"config differs .*\(loss.sigma: 1.0 -> 2.0\); restore"):
        fit(config, tmp_path / "run", changed, resume=True)
    with pytest.raises(ValueError, match=r"\(model: None -> \{'name': 'mlp'\}\)"):
        fit(config, tmp_path / "run", {**run_config, "model": {"name": "mlp"}}, resume=True)
    # Execution-only fields may differ; so may the steps of a constant schedule (above).
    resumed = fit(replace(config, checkpoint_every=1), tmp_path / "run", run_config, resume=True)
    assert resumed.start_step == 4
    # A section the checkpoint records and this run does not (an older scorelab recorded
    # the sampler, which does not enter training) is not compared.
    fit(config, tmp_path / "older", {**run_config, "sampler": {"name": "ddim"}})
    assert fit(config, tmp_path / "older", run_config, resume=True).start_step == 4
    cosine = replace(config, schedule="cosine")
    fit(cosine, tmp_path / "cosine", run_config)
    with pytest.raises(ValueError, match="train.steps 4 -> 6 changes the 'cosine' learning-rate"):
        fit(replace(cosine, steps=6), tmp_path / "cosine", run_config, resume=True)


def test_a_field_an_older_checkpoint_lacks_resumes_at_its_default_only(tmp_path):
    """A run written before a config field existed resumes when the field is at its declared
    default (the computation it had then), and is refused by name when it is not."""
    config = TrainConfig(steps=4, learning_rate=0.1, optimizer="sgd", checkpoint_every=2)
    older = {"loss": {"name": "dsm", "sigma": 1.0}}
    defaults = {"loss": {"name": "ncsn", "sigma": 1.0, "label_dropout": 0.0}}

    def fit(out_dir, run_config, resume=False):
        return train(jax.random.key(0), Shift(jnp.zeros(2)), linear_loss, np.zeros((4, 2)),
                     config, out_dir=out_dir, resume=resume, progress=False,
                     run_config=run_config, run_defaults=defaults)  # fmt: skip

    fit(tmp_path / "run", older)
    newer = {"loss": {**older["loss"], "label_dropout": 0.0}}
    assert fit(tmp_path / "run", newer, resume=True).start_step == 4
    changed = {"loss": {**older["loss"], "label_dropout": 0.1}}
    with pytest.raises(ValueError, match=r"\(loss.label_dropout: None -> 0.1\); restore"):
        fit(tmp_path / "run", changed, resume=True)
    # A field without a declared default, or a whole section, is still a difference.
    with pytest.raises(ValueError, match=r"loss.weighting: None -> 'edm'"):
        fit(tmp_path / "run", {"loss": {**newer["loss"], "weighting": "edm"}}, resume=True)


@pytest.mark.slow  # starts a second training process
def test_a_second_process_cannot_train_into_a_busy_run_directory(reference, tmp_path):
    run_dir = tmp_path / "run"
    process = run_script(
        f"""
        import sys
        import numpy as np
        from scorelab.runs import prepare_run_dir
        from test_training import CONFIG, arrays, replace, run
        with prepare_run_dir({str(run_dir)!r}):
            print("locked", flush=True)
            config = replace(CONFIG, checkpoint_every=5)
            result = run(config, out_dir={str(run_dir / "checkpoints")!r})
            np.savez({str(tmp_path / "result.npz")!r}, losses=result.losses, *arrays(result.model))
            sys.stdin.read()  # hold the lock until the test has tried to take it
        """,
        stdin=subprocess.PIPE,
    )
    try:
        assert process.stdout.readline() == "locked\n", process.stderr.read()
        with pytest.raises(RunBusyError, match=f"{run_dir} is in use by another process"):
            with prepare_run_dir(run_dir, resume=True):
                run(out_dir=run_dir / "checkpoints", resume=True)  # not reached
        _, stderr = process.communicate(input="", timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    saved = np.load(tmp_path / "result.npz")
    np.testing.assert_array_equal(saved["losses"], reference[0].losses)
    for index, expected in enumerate(arrays(reference[0].model)):
        np.testing.assert_array_equal(saved[f"arr_{index}"], expected)
    assert open_checkpoints(run_dir / "checkpoints").latest_step() == CONFIG.steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps: expected an integer >= 1"),
        ({"steps": 2.5}, "steps: expected an integer"),
        ({"steps": True}, "steps: expected an integer"),
        ({"learning_rate": -1e-3}, "learning_rate: expected a number > 0"),
        ({"learning_rate": float("nan")}, "learning_rate: expected a number > 0"),
        ({"optimizer": "rmsprop"}, "optimizer: .*accepted: adam, adamw, sgd$"),
        ({"schedule": "linear"}, "schedule: .*accepted: constant, cosine, warmup_cosine"),
        ({"schedule": "warmup_cosine"}, "warmup_steps: .*1 <= warmup_steps < steps"),
        ({"warmup_steps": 10}, "warmup_steps: only used by schedule 'warmup_cosine'"),
        ({"grad_clip": 0.0}, "grad_clip: expected None or a number > 0"),
        ({"weight_decay": 1e-4}, "weight_decay: must be 0 with optimizer 'adam'.*adamw"),
        ({"optimizer": "sgd", "weight_decay": -1.0}, "weight_decay: expected a number >= 0"),
        ({"batch_size": 0}, "batch_size: expected None or an integer >= 1"),
        ({"steps_per_dispatch": 0}, "steps_per_dispatch: expected an integer >= 1"),
        ({"ema_decay": 1.0}, r"ema_decay: expected None or a number in \(0, 1\)"),
        ({"checkpoint_every": 0}, "checkpoint_every: expected None or an integer >= 1"),
        ({"seed": -1}, r"seed: expected an integer seed in \[0, 2\*\*32 - 1\], got -1"),
        ({"log_every": 0}, "log_every: expected an integer >= 1"),
    ],
)
def test_config_validation_names_the_field_and_accepted_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    config = TrainConfig(schedule="warmup_cosine", warmup_steps=10, optimizer="adamw",
                         weight_decay=1e-4, grad_clip=1.0)  # fmt: skip
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"^train\.lr: unknown field; accepted: steps, "):
        TrainConfig.from_dict({"lr": 1e-3})
    # As every section is read: an integer rate is a float, a string step count refused.
    assert isinstance(TrainConfig.from_dict({"learning_rate": 1}).learning_rate, float)
    with pytest.raises(ValueError, match=r"^train\.steps: expected an integer, got '3'"):
        TrainConfig.from_dict({"steps": "3"})


def test_save_and_load_model_round_trip(reference, tmp_path):
    model = reference[0].model
    save_model(tmp_path / "model", model, dim=2, widths=WIDTHS)
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is MLP
    for a, b in zip(arrays(loaded), arrays(model), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="does not rebuild the model"):
        save_model(tmp_path / "wrong", model, dim=2, widths=(16, 16))
    with pytest.raises(FileNotFoundError, match="saved model file not found"):
        load_model(tmp_path / "missing")


def dsm_relative_error(seed):
    """Train an MLP by DSM at sigma = 1 on N(MEAN, COVARIANCE); its relative L2 score error.

    The error is sqrt(sum |s_theta - s|^2 / sum |s|^2) against the exact noised score
    s(x) = -(COVARIANCE + I)^{-1} (x - MEAN), over 4096 fresh samples of q_1.
    """
    target = gaussian(MEAN, COVARIANCE)
    key_model, key_train = jax.random.split(jax.random.key(seed))
    config = TrainConfig(
        steps=1000, learning_rate=3e-3, schedule="cosine", batch_size=256, steps_per_dispatch=250
    )
    model = MLP(key_model, dim=2, widths=(32, 32))
    data = gaussian_samples(seed, 4096)
    result = train(key_train, model, LOSS_FN, data, config, progress=False)

    @eqx.filter_jit
    def relative_error(model, x_sigma):
        exact = jax.vmap(lambda x: target.ve_score(x, 1.0))(x_sigma)
        learned = jax.vmap(lambda x: model(x, 1.0))(x_sigma)
        return jnp.sqrt(jnp.sum((learned - exact) ** 2) / jnp.sum(exact**2))

    x_sigma = gaussian_samples(1000 + seed, 4096, covariance=COVARIANCE + np.eye(2))
    return float(relative_error(result.model, x_sigma))


def test_dsm_learns_the_noised_score_of_a_gaussian():
    # Measured with seeds 0, 1, 2: 0.050, 0.056, 0.058 (mean 0.055, sd 0.004). The threshold
    # 0.08 sits 0.022 above the worst seed, about 5 sd of the seed-to-seed spread.
    assert dsm_relative_error(seed=0) < 0.08


@pytest.mark.slow  # compiles the step for each loss
def test_an_equal_fresh_partial_loss_reuses_the_compiled_step():
    # Losses are written as functools.partial(loss, sigma=...), a fresh object per call; the
    # step must be compiled once per *value* of it, not once per object.
    traced = []

    def counting_dsm(key, score_fn, x, sigma):
        traced.append(sigma)  # runs when the step is traced, not when it runs
        return dsm_loss(key, score_fn, x, sigma=sigma)

    data, model = problem()
    config = replace(CONFIG, steps=3, steps_per_dispatch=3, ema_decay=None)

    def fit(sigma):
        loss_fn = functools.partial(counting_dsm, sigma=sigma)
        return train(jax.random.key(0), model, loss_fn, data, config, progress=False)

    first = fit(1.0)
    n_traces = len(traced)
    assert n_traces > 0
    again = fit(1.0)
    assert len(traced) == n_traces, "an equal partial recompiled the step"
    np.testing.assert_array_equal(first.losses, again.losses)
    other = fit(0.5)
    assert len(traced) > n_traces and 0.5 in traced, "a different sigma must recompile"
    assert not np.array_equal(first.losses, other.losses)
    fit(1)  # an int is not the float 1.0: its own compilation
    assert 1 in traced[-1:] and type(traced[-1]) is int
    # Unhashable arguments fall back to the object itself (no error, its own compilation).
    unhashable = functools.partial(counting_dsm, sigma=jnp.float32(1.0))
    train(jax.random.key(0), model, unhashable, data, config, progress=False)


def test_an_equal_fresh_model_reuses_the_compiled_step_and_a_static_change_does_not():
    # train hashes the model's static part once per call (training._StaticKey) instead of on
    # every dispatch: an equal model built afresh must still find the compiled step, and a
    # model differing only in a static field (same arrays) must not run the other's program.
    traced = []

    def counting_dsm(key, score_fn, x, sigma):
        traced.append(sigma)  # runs when the step is traced, not when it runs
        return dsm_loss(key, score_fn, x, sigma=sigma)

    data = gaussian_samples(1, 256)
    loss_fn = functools.partial(counting_dsm, sigma=1.0)
    config = replace(CONFIG, steps=3, steps_per_dispatch=3, ema_decay=None)

    def fit(**options):
        model = MLP(jax.random.key(2), dim=2, widths=WIDTHS, **options)
        return train(jax.random.key(0), model, loss_fn, data, config, progress=False)

    first = fit()
    n_traces = len(traced)
    assert n_traces > 0
    again = fit()
    assert len(traced) == n_traces, "an equal, freshly built model recompiled the step"
    np.testing.assert_array_equal(first.losses, again.losses)
    other = fit(activation="silu")
    assert len(traced) > n_traces, "a model with another activation ran the cached program"
    assert not np.array_equal(first.losses, other.losses)


def test_the_dispatches_of_a_run_share_one_compilation(tmp_path):
    # The start step and the number of active steps of a dispatch are traced, not static:
    # checkpoint-aligned dispatches of 1 step, at every start, reuse the compilation of one
    # dispatch of 4 steps from step 0.
    traced = []

    def counting_dsm(key, score_fn, x, sigma):
        traced.append(sigma)  # runs when the step is traced, not when it runs
        return dsm_loss(key, score_fn, x, sigma=sigma)

    data, model = problem()
    loss_fn = functools.partial(counting_dsm, sigma=1.0)
    config = replace(CONFIG, steps=4, steps_per_dispatch=4, ema_decay=None)
    train(jax.random.key(0), model, loss_fn, data, config, progress=False)  # one dispatch
    n_traces = len(traced)
    assert n_traces > 0
    config = replace(config, checkpoint_every=1)  # dispatches (0, 1), (1, 1), (2, 1), (3, 1)
    train(jax.random.key(0), model, loss_fn, data, config, out_dir=tmp_path, progress=False)
    assert len(traced) == n_traces, "a dispatch's start or length recompiled the step"


# Hostile inputs: refused before any work, with a one-line message naming the
# argument; and the one deprecated optax call gone.
TINY = TrainConfig(steps=3, steps_per_dispatch=2, batch_size=4, learning_rate=0.1,
                   optimizer="sgd")  # fmt: skip


def tiny(model=None, loss_fn=linear_loss, data=None, config=TINY, **kwargs):
    model = Shift(jnp.zeros(2)) if model is None else model
    data = np.zeros((4, 2), np.float32) if data is None else data
    return train(jax.random.key(0), model, loss_fn, data, config, progress=False, **kwargs)


def scaled_loss(key, score_fn, x, scale):
    return -scale * jnp.sum(score_fn(x, None))


def labelled_loss(key, score_fn, x, label):
    return -jnp.sum(score_fn(x, None)) + 0.0 * label


class Labelled(eqx.Module):
    """:class:`Shift` with the ``num_classes`` of a class-conditional model."""

    b: jax.Array
    num_classes: int = eqx.field(static=True)

    def __call__(self, x, sigma=None):
        return self.b


def test_training_warns_of_nothing_deprecated():
    """``optax.global_norm`` warned (a DeprecationWarning) on every run."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = tiny()
    assert np.all(np.isfinite(result.losses))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"config": {"steps": 3}}, TypeError, "config: expected a scorelab.training.TrainConfig"),
        ({"config": None}, TypeError, "config: expected a scorelab.training.TrainConfig"),
        ({"loss_fn": None}, TypeError, "loss_fn: expected a callable loss_fn(key, score_fn, x)"),
        ({"loss_fn": lambda key, f: 0.0}, TypeError, "loss_fn: cannot be called as loss_fn("),
        ({"loss_fn": labelled_loss}, TypeError, "(a class-conditional loss: pass labels too)"),
        ({"loss_fn": lambda key, f, x: f(x) * 2}, ValueError,
         "loss_fn: must return a scalar per example, got shape (2,)"),
        ({"labels": np.full(4, 2**32 + 1), "loss_fn": labelled_loss}, ValueError,
         "labels: classes must be < 2**31"),
        ({"labels": np.full(4, 2**31), "loss_fn": labelled_loss}, ValueError,
         "labels: classes must be < 2**31"),
        ({"labels": np.zeros(4, int)}, TypeError, "labels: given, but loss_fn takes no label"),
        ({"labels": np.full(4, 3), "loss_fn": labelled_loss,
          "model": Labelled(jnp.zeros(2), num_classes=3)}, ValueError,
         "labels: classes must be < the model's num_classes (3), got 3"),
        ({"model": lambda x, s: x}, TypeError, "model: expected an equinox Module with trainable"),
        ({"run_config": [1]}, TypeError, "run_config: expected None or a dict of sections"),
        ({"run_defaults": "x"}, TypeError, "run_defaults: expected None or a dict of sections"),
        ({"resume": "no"}, TypeError, "resume: expected True or False, got 'no'"),
        ({"resume": 1}, TypeError, "resume: expected True or False, got 1"),
        ({"hflip": "false"}, TypeError, "hflip: expected True or False, got 'false'"),
        ({"progress": None}, TypeError, "progress: expected True or False, got None"),
    ],
)  # fmt: skip
def test_train_refuses_a_bad_argument_by_name(kwargs, error, message):
    """raw internal errors, or silently wrong runs (a vector loss averaged, labels
    wrapped to int32, a function "trained", ``resume="no"`` read as true)."""
    if "config" in kwargs:  # train's own keyword ``progress`` comes after it
        with pytest.raises(error, match=re.escape(message)) as caught:
            train(jax.random.key(0), Shift(jnp.zeros(2)), linear_loss,
                  np.zeros((4, 2), np.float32), kwargs["config"], progress=False)  # fmt: skip
    elif "progress" in kwargs:
        with pytest.raises(error, match=re.escape(message)) as caught:
            train(jax.random.key(0), Shift(jnp.zeros(2)), linear_loss,
                  np.zeros((4, 2), np.float32), TINY, progress=kwargs["progress"])  # fmt: skip
    else:
        with pytest.raises(error, match=re.escape(message)) as caught:
            tiny(**kwargs)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", ["file", "device"])
def test_train_refuses_an_out_dir_that_is_not_a_folder(tmp_path, kind):
    """orbax's writer thread logged a traceback, then an error naming neither."""
    out_dir = tmp_path / "afile" if kind == "file" else Path(os.devnull)
    if kind == "file":
        out_dir.write_text("")
    with pytest.raises(ValueError, match=re.escape(f"out_dir: {out_dir} exists and is not a")):
        tiny(out_dir=out_dir)


def test_resume_refuses_another_loss(tmp_path):
    """a resume with another loss (or its hyper-parameters) joined two objectives
    in one loss curve; an equal fresh partial resumes."""
    tiny(loss_fn=functools.partial(scaled_loss, scale=1.0), out_dir=tmp_path / "run")
    longer = replace(TINY, steps=5)
    with pytest.raises(ValueError, match=r"cannot resume: loss_fn differs .*'scale': 2\.0"):
        tiny(loss_fn=functools.partial(scaled_loss, scale=2.0), config=longer,
             out_dir=tmp_path / "run", resume=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"cannot resume: loss_fn differs .*linear_loss"):
        tiny(config=longer, out_dir=tmp_path / "run", resume=True)
    resumed = tiny(loss_fn=functools.partial(scaled_loss, scale=1.0), config=longer,
                   out_dir=tmp_path / "run", resume=True)  # fmt: skip
    assert resumed.start_step == 3


@pytest.mark.parametrize("values", [None, [("steps", 3)], "steps=3"])
def test_train_config_from_dict_refuses_a_non_mapping(values):
    """``TrainConfig.from_dict(None)``: 'NoneType' object is not iterable."""
    with pytest.raises(TypeError, match=r"^train: expected a table of fields"):
        TrainConfig.from_dict(values)


def test_a_checkpoint_that_cannot_be_saved_is_found_before_the_first_step(tmp_path, monkeypatch):
    """A file-size or open-file limit (or a full disk) under the checkpoint folder failed the
    run's first save, after the training it was to keep; ``train`` checks that its state fits
    before it trains."""
    import errno

    import scorelab.checkpoints as checkpoints
    import scorelab.training as training

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the checkpoint's room")

    monkeypatch.setattr(checkpoints, "free_descriptors", lambda: 10)
    monkeypatch.setattr(training, "_dispatch", no_training)
    with pytest.raises(OSError) as caught:
        run(out_dir=tmp_path / "run")
    assert caught.value.errno == errno.EMFILE
    assert caught.value.filename == str((tmp_path / "run").absolute())


@pytest.mark.parametrize(
    "options, field",
    [
        ({"steps": 100, "schedule": "warmup_cosine", "warmup_steps": 100}, "warmup_steps"),
        ({"ema_decay": 1 - 1e-10}, "ema_decay"),  # 1 in float32: the average never moves
    ],
)
def test_train_config_refuses_a_warm_up_of_the_whole_run_and_a_decay_of_one(options, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**options)


# --- pinned by mutation pass 34 --------------------------------------------------------------


class _Shift(eqx.Module):
    """A one-field "network": ``x + b``, so a loss of ``-sum`` moves ``b`` by the learning
    rate each SGD step, and every number below follows by hand."""

    b: jax.Array

    def __call__(self, x, sigma):
        return x + self.b


def _minus_sum(key, score_fn, x):
    return -jnp.sum(score_fn(x, None))


def test_a_nan_gradient_of_a_finite_loss_stops_training_before_it_is_applied():
    """sqrt(0 * s) is 0 with an infinite derivative, times 0: a NaN gradient of a finite loss
    at the first step. The guard checks the update too, so the NaN never reaches the weights."""

    def loss_fn(key, score_fn, x):
        return jnp.sqrt(0.0 * jnp.sum(score_fn(x, None)))

    config = TrainConfig(steps=3, learning_rate=0.1, optimizer="sgd")
    with pytest.raises(NonFiniteLossError) as error:
        train(jax.random.key(0), _Shift(jnp.zeros(2)), loss_fn, np.zeros((4, 2)), config,
              progress=False)  # fmt: skip
    assert error.value.step == 0


def test_the_error_of_a_non_finite_loss_carries_the_losses_before_it():
    """SGD at 0.1 moves b by 0.1 a step: losses -0.2 i until b passes 0.45 at step 5, where
    the loss is NaN; the error holds the five finite ones, not zeros."""

    def loss_fn(key, score_fn, x):
        b = score_fn(x, None)
        return jnp.where(b[0] > 0.45, jnp.nan, -jnp.sum(b))

    config = TrainConfig(steps=20, learning_rate=0.1, optimizer="sgd", steps_per_dispatch=3)
    with pytest.raises(NonFiniteLossError) as error:
        train(jax.random.key(0), _Shift(jnp.zeros(2)), loss_fn, np.zeros((4, 2)), config,
              progress=False)  # fmt: skip
    np.testing.assert_allclose(error.value.losses, -0.2 * np.arange(5), atol=1e-6)


def test_sgd_weight_decay_is_the_gradient_of_an_l2_term():
    """lambda / 2 |theta|^2 has gradient lambda theta: a zero loss gradient gives the step
    -eta lambda theta."""
    theta = jnp.array([3.0, 4.0])
    sgd = make_optimizer(TrainConfig(learning_rate=0.1, optimizer="sgd", weight_decay=0.5))
    update, _ = sgd.update(jnp.zeros(2), sgd.init(theta), theta)
    np.testing.assert_allclose(update, -0.1 * 0.5 * theta, rtol=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": 6, "ema_decay": 0.5}, r"config differs .*train.ema_decay: 0.9 -> 0.5"),
        ({"steps": 3}, "train.steps = 3 is below the checkpointed step 4"),
        ({"steps": 6, "hflip": True}, "cannot resume: hflip False -> True changes the batches"),
    ],
)
def test_a_resume_refuses_what_would_make_it_another_run(tmp_path, change, message):
    """A changed EMA decay (neither run's average), a step count one below the checkpoint's
    (a numpy broadcast error at the boundary), and flips turned on (other batches)."""
    change = dict(change)
    hflip = change.pop("hflip", False)
    config = TrainConfig(steps=4, learning_rate=0.1, optimizer="sgd", checkpoint_every=2,
                         ema_decay=0.9)  # fmt: skip
    data = np.zeros((4, 1, 2, 2), np.float32)

    def fit(config, resume, hflip=False):
        model = _Shift(jnp.zeros((1, 2, 2)))
        options = {"out_dir": tmp_path / "run", "resume": resume, "hflip": hflip}
        return train(jax.random.key(0), model, _minus_sum, data, config, progress=False, **options)

    fit(config, False)
    with pytest.raises(ValueError, match=message):
        fit(replace(config, **change), True, hflip)

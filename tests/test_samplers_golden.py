"""Every sampler reproduces its pinned numbers (``tests/fixtures/sampler_golden.npz``).

The file holds, for each case of ``_sampler_checks.GOLDEN_CASES``, three chains on the exact
score of the seed mixture over ``default_sigmas(12)``: with injected standard normal rows and
from a key. It was written by the samplers before the kernel/driver redesign, so this test is
what shows that the redesign changed no number.

Equality is to float32 rounding, measured on the machine that runs the test. Bit equality held
only on the CPU that wrote the file: another x86 CPU (another vector width, another libm) gave
other last bits on 14 of 16 cases, up to 2e-7 relative, so the suite failed there with no change
to the code. Each case therefore runs twice on the injected rows, in float32 and in float64,
and the gap between the two is the scale of float32's rounding for that computation; the
golden numbers must match to ``ROUNDING_FACTOR`` times it. A guard keeps that tolerance
below ``RESOLUTION`` of the states' size, and a last test shows that moving one noise level by
1e-4 of itself fails it: any change to the arithmetic beyond rounding still fails.

The adaptive solvers are different: one rounding difference can flip one of the step-size
controller's accept/reject decisions, after which two runs take different, equally valid
steps. Their golden numbers are held to a few of the controller's own local tolerances
(``rtol * |x| + atol``), and their evaluation counts to ``NFE_SPREAD``.
"""

import pathlib

import jax
import numpy as np
import pytest
from _sampler_checks import GOLDEN_CASES, golden_sampler

from scorelab.models import ExactScore
from scorelab.samplers import sample
from scorelab.targets import seed_mixture

GOLDEN = np.load(pathlib.Path(__file__).parent / "fixtures" / "sampler_golden.npz")
ADAPTIVE = ("tsit5", "dopri5")
FIXED_STEP = [label for label in GOLDEN_CASES if label not in ADAPTIVE]
ROUNDING_FACTOR = 4
"""Golden numbers may differ from this machine's by this many float32-vs-float64 gaps."""
RESOLUTION = 1e-5
"""The largest tolerance allowed, relative to the largest state."""
CONTROLLER_FACTOR = 4
"""Adaptive solvers' golden numbers may differ by this many local controller tolerances."""
NFE_SPREAD = 0.25
"""Adaptive solvers' total evaluations may differ from the golden count by this fraction."""


def _run(label, dtype, noise=True):
    """Case ``label``'s three chains in ``dtype``, on the golden noise rows or (``noise=False``)
    from the golden key."""
    sampler = golden_sampler(label, np.asarray(GOLDEN["sigmas"], dtype))
    x_init = GOLDEN["x_data"] if label in ("ula", "mala") else GOLDEN["x_top"]
    rows = np.asarray(GOLDEN[f"{label}/noise"], dtype) if noise else None
    key = jax.random.wrap_key_data(GOLDEN["key_chain"])
    return sample(
        key, sampler, ExactScore(seed_mixture()), np.asarray(x_init, dtype),
        trajectory=True, noise=rows,
    )  # fmt: skip


def _outputs(label):
    """This machine's float32 runs of case ``label``: ``{"injected": ..., "key": ...}``."""
    return {"injected": _run(label, np.float32), "key": _run(label, np.float32, noise=False)}


def _assert_close(out, label, path, tol):
    np.testing.assert_allclose(out.x, GOLDEN[f"{label}/{path}_x"], rtol=0, atol=tol)
    trajectory = GOLDEN[f"{label}/{path}_trajectory"]
    np.testing.assert_allclose(out.trajectory, trajectory, rtol=0, atol=tol)


def _rounding_tolerance(label, out32):
    """``ROUNDING_FACTOR`` times the largest gap between ``out32`` (case ``label`` on the
    injected rows in float32) and the same run in float64, at least 4 float32 spacings."""
    with jax.enable_x64(True):
        exact = np.asarray(_run(label, np.float64).trajectory)
    assert exact.dtype == np.float64  # the reference really ran in float64
    scale = float(np.abs(exact).max())
    gap = float(np.abs(np.asarray(out32.trajectory, np.float64) - exact).max())
    tol = ROUNDING_FACTOR * max(gap, float(np.spacing(np.float32(scale))))
    assert tol <= RESOLUTION * scale, f"float32 rounding alone moves {label} by {gap:.2e}"
    return tol


@pytest.mark.parametrize("label", FIXED_STEP)
def test_sampler_reproduces_its_golden_numbers(label):
    outputs = _outputs(label)
    tol = _rounding_tolerance(label, outputs["injected"])
    for path, out in outputs.items():  # the key path draws its own rows: same arithmetic
        _assert_close(out, label, path, tol)


@pytest.mark.parametrize("label", ADAPTIVE)
def test_adaptive_solver_reproduces_its_golden_numbers(label):
    sampler = golden_sampler(label, GOLDEN["sigmas"])
    for path, out in _outputs(label).items():
        golden = GOLDEN[f"{label}/{path}_trajectory"]
        local = float(sampler.rtol) * float(np.abs(golden).max()) + float(sampler.atol)
        _assert_close(out, label, path, CONTROLLER_FACTOR * local)
        nfe = int(np.sum(out.nfe))
        assert abs(nfe - int(np.sum(GOLDEN[f"{label}/{path}_nfe"]))) <= NFE_SPREAD * nfe


def test_the_golden_tolerance_fails_on_a_moved_level():
    """The tolerance is far finer than a real defect: moving one of DDIM's noise levels by
    1e-4 of itself moves its states beyond the tolerance the test above allows."""
    sigmas = np.array(GOLDEN["sigmas"], np.float32)
    sigmas[len(sigmas) // 2] *= 1 + 1e-4
    key = jax.random.wrap_key_data(GOLDEN["key_chain"])
    moved = sample(
        key, golden_sampler("ddim_eta0", sigmas), ExactScore(seed_mixture()), GOLDEN["x_top"],
        trajectory=True, noise=GOLDEN["ddim_eta0/noise"],
    )  # fmt: skip
    tol = _rounding_tolerance("ddim_eta0", _run("ddim_eta0", np.float32))
    golden = GOLDEN["ddim_eta0/injected_trajectory"]
    assert np.abs(np.asarray(moved.trajectory) - golden).max() > 2 * tol

"""Interrupting a training run at a chosen step, as Ctrl-C or a signal would."""

import scorelab.training


def interrupt_at(monkeypatch, step: int, interrupt=None):
    """Make ``train``'s progress bar interrupt the run once it has counted ``step`` steps: a
    ``KeyboardInterrupt``, or ``interrupt()`` (e.g. a signal to this process) if given."""
    counted = [0]

    class Interrupting(scorelab.training.tqdm):
        def update(self, n=1):
            super().update(n)
            counted[0] += n  # also when the bar is disabled (progress=False)
            if counted[0] >= step:
                if interrupt is None:
                    raise KeyboardInterrupt
                interrupt()

    monkeypatch.setattr(scorelab.training, "tqdm", Interrupting)

"""regression / improvement / no-baseline / baseline-mismatch: what moved since a recorded baseline
(`check --baseline`). Produced by initdiag.baseline.compare, after the run; an `ignore:` suppresses them
there (checks.suppress_later)."""

from __future__ import annotations

from initdiag.checks import Check, FindingCode

CHECK = Check(
    order=110,
    stage="baseline",
    codes=(
        FindingCode("regression", ("warning",), "The spec got worse since the baseline",
                    "A layer's activation or gradient variance moved by more than the baseline factor (or became "
                    "non-finite), a new warning or error appeared, or a finding's severity rose since the recorded "
                    "baseline. Fix the change, or record a new baseline with --save-baseline if it is intended.",
                    flag="regressed", panel=None),
        FindingCode("improvement", ("info",), "The spec got better since the baseline",
                    "A warning or error of the recorded baseline went away, or its severity fell. Record a new "
                    "baseline with --save-baseline to keep the gain from slipping back unnoticed.",
                    flag="improved", panel=None),
        FindingCode("no-baseline", ("info",), "The baseline has no figures for this spec or layer",
                    "The spec (or one of its layers) is new since the baseline was recorded, so nothing can be "
                    "compared. Record a baseline with --save-baseline to compare later runs against it.",
                    flag="no-baseline", panel=None),
        FindingCode("baseline-mismatch", ("info",), "The run differs from the baseline's setup",
                    "The seed, scheme, batch, dtype or seeds differ from the baseline's, or a baseline layer is gone: "
                    "figures may move for that reason alone. Run with the baseline's settings, or record a new baseline.",
                    flag="baseline-mismatch", panel=None),
    ),
)

"""unused-ignore: an `ignore:` entry that suppressed nothing in this run (as ruff and mypy report them).
Produced by the suppression step (checks._suppression), not by a rule of its own."""

from __future__ import annotations

from initdiag.checks import Check, FindingCode

CHECK = Check(
    order=100,
    stage="suppression",
    codes=(FindingCode("unused-ignore", ("warning",), "An ignore: entry suppresses nothing",
                       "The spec (or one layer) ignores a finding code that this run did not produce: the problem it "
                       "silenced is gone, or the code is on the wrong layer. Remove it from the ignore list so that a "
                       "returning problem is reported.",
                       flag="unused-ignore", panel=None),),
)

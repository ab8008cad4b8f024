"""The verdict against real training: the development set of ../shared/trainability and our own labelled
networks (benchmarks/trainability_extra), scored by the development set's own evaluate.py."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "trainability"
EXTRA = ROOT / "benchmarks" / "trainability_extra"

pytestmark = pytest.mark.skipif(not (SHARED / "evaluate.py").exists(), reason="../shared/trainability is not beside the clone")


def score(tmp_path, *extra) -> dict:
    saved = tmp_path / "scores.json"
    command = f"{shlex.quote(sys.executable)} -m initdiag"
    subprocess.run([sys.executable, str(SHARED / "evaluate.py"), command, "--max-disagreements", "999",
                    "--save", str(saved), "--quiet", *extra], check=True, capture_output=True, text=True)
    return json.loads(saved.read_text())


def counts(saved: dict) -> dict:
    """From evaluate.py's rows: specs, agreements, false alarms (trainable but failing), misses, invalid."""
    rows = saved["rows"]
    false_alarms = [row["spec"] for row in rows if row["trainable"] and row["verdict"] == "failing"]
    misses = [row["spec"] for row in rows if not row["trainable"] and row["verdict"] in ("healthy", "warning")]
    invalid = [row["spec"] for row in rows if row["verdict"] not in ("healthy", "warning", "failing")]
    return {"n": len(rows), "agree": len(rows) - len(false_alarms) - len(misses) - len(invalid),
            "false_alarms": false_alarms, "misses": misses, "invalid": invalid}


def test_development_set_no_trainable_network_fails_and_nine_in_ten_agree(tmp_path):
    found = counts(score(tmp_path))
    assert found["n"] >= 50 and not found["invalid"], found
    assert not found["false_alarms"], found
    assert found["agree"] >= 0.9 * found["n"], found


def test_our_own_labelled_networks_no_trainable_network_fails(tmp_path):
    found = counts(score(tmp_path, "--specs", str(EXTRA / "specs"), "--labels", str(EXTRA / "labels.json"),
                         "--baselines", str(tmp_path / "none.json")))
    assert found["n"] == 47 and not found["invalid"], found
    assert not found["false_alarms"], found

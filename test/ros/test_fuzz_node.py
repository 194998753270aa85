"""scripts/fuzz_node.py at miniature scale: the policy_node process survives malformed inputs,
lifecycle transitions and parameter sets, keeps the safety invariant and recovers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~20 s quiet, up to ~60 s on a busy 2-core machine
def test_the_fuzzed_policy_node_never_crashes_or_breaks_the_invariant(tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fuzz_node.py"), "--messages", "200",
         "--seconds", "40", "--seed", "1", "--out", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=85)
    assert out.exists(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    summary = proc.stderr[-3000:]
    node = report["node"]
    assert node["exited_during_run"] is None and node["shutdown_rc"] == 0, summary
    assert node["tracebacks"] == 0 and node["fatal_signs"] == 0, summary
    assert node["descendants_left_running"] == [], summary
    assert all(report["sent"][name]["malformed"] == 200 for name in report["sent"]), summary
    assert report["violations"]["checked"] > 0 and report["violations"]["violations"] == 0, \
        report["violations"]
    assert report["chunk_violations"]["violations"] == 0, report["chunk_violations"]
    assert report["debug_violations"]["commands"]["violations"] == 0
    assert report["control"]["invalid_accepted"] == 0, report["control"]
    recovery = report["recovery"]
    assert recovery["bursts"] >= 3 and recovery["stalls"] == 0, recovery
    assert recovery["chunks_after_bursts"] >= 1 and recovery["final_s"] is not None, recovery
    assert report["ok"] and proc.returncode == 0, summary

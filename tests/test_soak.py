"""The soak script (benchmarks/soak.py) on a small scale, so it keeps working.

The full run (20,000 cycles) is a benchmark; this runs a few hundred cycles
against a real ``twistd rig`` process and checks the verdict it prints.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_small_soak_returns_to_baseline(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "soak.py"), "--cycles", "600",
         "--warmup", "100", "--concurrency", "20", "--log", str(tmp_path / "rig.log")],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] == 700 and report["failed"] == 0
    assert report["after"]["fds"] <= report["before"]["fds"] + 2
    assert report["after"]["connections"] == report["before"]["connections"]
    assert report["events_published"] > 0

"""The public surface's type hints hold: mypy over the files pyproject.toml names."""
import os
import subprocess
import sys


def test_mypy_finds_nothing():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=root,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout

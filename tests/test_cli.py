"""The command-line helpers every stage shares (faults are in test_faults.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (import hooks stay out of the test process)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_kept_unloaded_packages_look_uninstalled_and_loaded_ones_stay() -> None:
    output = run_python("""
        import json
        from stages.cli import keep_unloaded
        keep_unloaded({"json", "sqlite3", "csv"})
        for name in ("sqlite3", "sqlite3.dbapi2", "csv"):
            try:
                __import__(name)
            except ModuleNotFoundError:
                print("hidden", name)
        print("loaded", json.dumps([1]))
        import decimal
        print("other", decimal.Decimal(1))
    """)
    assert output.splitlines() == [
        "hidden sqlite3", "hidden sqlite3.dbapi2", "hidden csv", "loaded [1]", "other 1",
    ]  # fmt: skip

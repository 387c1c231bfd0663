"""``nvp-app``: runs ``streamlit run`` on the bundled app (extra arguments go to Streamlit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "streamlit_app.py"


def command(args: list[str]) -> list[str]:
    """The ``streamlit run`` command line for ``args`` (e.g. ``["--server.port", "8600"]``)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--browser.gatherUsageStats", "false", *args]


def main(argv: list[str] | None = None) -> int:
    """Launches the app and returns Streamlit's exit code."""
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    root = str(APP.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        return subprocess.call(command(args), env=env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

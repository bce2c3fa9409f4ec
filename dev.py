#!/usr/bin/env python3
"""Set up and run Kanal from a fresh clone with nothing but Python 3.11+.

    python3 dev.py demo     create .venv, install Kanal, run `kanal demo`
    python3 dev.py test     create .venv, install Kanal with test extras, run the whole test suite
    python3 dev.py bench    run the benchmarks in bench/ (writes bench/results/)

Extra arguments go to the command: `python3 dev.py test -k snap -x`.
The virtual environment is reused; it is reinstalled when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
COMMANDS = ("demo", "test", "bench")


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Kanal needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print("Creating .venv …", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".kanal-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("Installing Kanal and its dependencies into .venv …", file=sys.stderr, flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", f"{ROOT}[test]"], check=True)
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """The browser tests drive Debian's Chromium; install it when we can."""
    if shutil.which("chromium") or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    print("Installing Debian's chromium for the browser tests …", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False, stdout=subprocess.DEVNULL)


def run(argv: list[str]) -> int:
    """Become the command (so Ctrl-C and signals reach it directly)."""
    if os.name == "posix":
        os.execv(argv[0], argv)
    return subprocess.call(argv, cwd=ROOT)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = sys.argv[1], sys.argv[2:]
    if command not in COMMANDS:
        # Before anything is created or installed: a typo costs nothing.
        print(f"unknown command {command!r}; choose one of: {', '.join(COMMANDS)}\n{__doc__}", file=sys.stderr)
        return 2
    ensure_environment()
    if command == "demo":
        return run([str(BIN / "kanal"), "demo", *rest])
    os.chdir(ROOT)
    if command == "test":
        ensure_chromium()
        return run([str(PYTHON), "-m", "pytest", *rest])
    return run([str(PYTHON), "-m", "bench", *rest])  # command == "bench"


if __name__ == "__main__":
    sys.exit(main())

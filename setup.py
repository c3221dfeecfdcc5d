"""Build hooks that put the built website snippet (dni/static/dni.min.js) into sdists and wheels.

The snippet is minified from static/snippet/dni.js by the terser pinned in package-lock.json and
is never committed, so a build from a clean clone runs `npm ci && npm run build` first; a build
from an sdist finds the file already there. All metadata lives in pyproject.toml.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import ExecError

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "static" / "snippet" / "dni.js"
BUILT = ROOT / "dni" / "static" / "dni.min.js"
LOCK = ROOT / "package-lock.json"
NODE_MODULES = ROOT / "node_modules"


def _is_current(built: Path, source: Path) -> bool:
    # An sdist carries both files with the build's times, so it never rebuilds; a clone whose
    # source was edited after its last build does.
    if not built.is_file():
        return False
    return not source.is_file() or built.stat().st_mtime >= source.stat().st_mtime


def build_snippet() -> None:
    """Run the snippet's npm build unless dni/static/dni.min.js is newer than its source."""
    if _is_current(BUILT, SOURCE):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ExecError(
            f"{BUILT.relative_to(ROOT)} is missing or older than {SOURCE.relative_to(ROOT)} and "
            "npm is not installed to build it: install Node.js and npm (Debian: apt-get install "
            "nodejs npm), or build from an sdist, which carries the built snippet"
        )
    if not NODE_MODULES.is_dir() or LOCK.stat().st_mtime > NODE_MODULES.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True
        )
    subprocess.run([npm, "run", "--silent", "build"], cwd=ROOT, check=True)


class BuildPy(build_py):
    """build_py that builds the snippet before copying package data."""

    def run(self) -> None:
        build_snippet()
        super().run()


class Sdist(sdist):
    """sdist that builds the snippet first, so the archive carries it (see MANIFEST.in)."""

    def run(self) -> None:
        build_snippet()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})

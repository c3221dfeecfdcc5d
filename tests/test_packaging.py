"""dni as pip installs it: a wheel built by `python -m build` and a non-editable `pip install` of a
clone both serve the built snippet and the OpenAPI document from site-packages.

Both go into one fresh virtualenv (the wheel with its dependencies, then the clone over it) and
run from a folder outside the repository, so nothing is imported from the clone. Marked
`packaging` (select or skip with `-m`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dni.web.openapi import read_spec
from tests.servers import free_port

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
BUILT = Path("dni") / "static" / "dni.min.js"
# Local state a fresh clone does not have (.gitignore): without the snippet build and
# node_modules, the build hook has to run npm as it does on a clean clone.
NOT_IN_A_CLONE = {
    ".git",
    ".venv",
    "node_modules",
    "build",
    "dist",
    "instance",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
}


def copy_clone(dest: Path) -> Path:
    """The working tree as a fresh clone of it would have it: no build output, no caches."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        skipped = [n for n in names if n in NOT_IN_A_CLONE or n.endswith(".egg-info")]
        if Path(folder) == ROOT / "dni":
            skipped.append("static")
        return skipped

    shutil.copytree(ROOT, dest, ignore=ignore)
    assert not (dest / BUILT).exists()
    return dest


def clean_env(path: str | None = None) -> dict[str, str]:
    """This process's environment without the repository's virtualenv or any dni setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DNI_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    repo_bin = str(ROOT / ".venv" / "bin")
    default = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != repo_bin)
    env["PATH"] = default if path is None else path
    return env


def run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion; fail the test with its output if it fails."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def fresh_venv(folder: Path) -> Path:
    """A new virtualenv without system site-packages; pip reuses its download cache."""
    run([sys.executable, "-m", "venv", folder], cwd=folder.parent)
    return folder / "bin"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def serving(venv_bin: Path, folder: Path) -> Iterator[str]:
    """`dni serve` of the installed package, its private Redis and SQLite under `folder`."""
    base = f"127.0.0.1:{free_port()}"
    env = clean_env(f"{venv_bin}{os.pathsep}{clean_env()['PATH']}")
    env["DNI_INSTANCE_PATH"] = str(folder / "instance")
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv_bin / "dni"), "serve", "--bind", base, "--workers", "1"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            try:
                if _get(f"http://{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dni serve did not answer /healthz in 30 s"
            time.sleep(0.2)
        yield f"http://{base}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def assert_installed_app_serves(venv_bin: Path, folder: Path, snippet: bytes) -> None:
    """The installed dni is imported from the virtualenv and serves /dni.js and /openapi.json."""
    folder.mkdir()
    probe = (
        "import dni.config, dni.web.openapi as o; print(dni.__file__, dni.config.SNIPPET, o.SPEC)"
    )
    for located in run([venv_bin / "python", "-c", probe], cwd=folder).split():
        assert Path(located).is_relative_to(venv_bin.parent), located
    with serving(venv_bin, folder) as base:
        status, body = _get(f"{base}/dni.js")
        assert (status, body) == (200, snippet)
        status, body = _get(f"{base}/openapi.json")
        assert status == 200, body[:500]
        spec: dict[str, Any] = json.loads(body)
        assert spec == read_spec()


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh virtualenv holding the wheel that `python -m build` made from a clean clone."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    clone = copy_clone(tmp_path / "clone")
    dist = tmp_path / "dist"
    # Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked sdist.
    run([sys.executable, "-m", "build", "--outdir", dist, clone], cwd=tmp_path)
    snippet = (clone / BUILT).read_bytes()
    (sdist,) = dist.glob("dni-*.tar.gz")
    with tarfile.open(sdist) as archive:
        assert f"{sdist.name.removesuffix('.tar.gz')}/{BUILT}" in archive.getnames()
    (wheel,) = dist.glob("dni-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(str(BUILT)) == snippet
    venv_bin = fresh_venv(tmp_path / "venv")
    # With its dependencies, as declared: a missing one fails the import or the serving below.
    run([venv_bin / "pip", "install", "--quiet", wheel], cwd=tmp_path)
    return venv_bin, snippet


def test_wheel_built_from_an_sdist_serves_the_snippet_and_the_openapi_document(
    installed_wheel: tuple[Path, bytes], tmp_path: Path
) -> None:
    venv_bin, snippet = installed_wheel
    assert_installed_app_serves(venv_bin, tmp_path / "elsewhere", snippet)


def test_pip_install_of_a_clone_serves_the_snippet_and_the_openapi_document(
    installed_wheel: tuple[Path, bytes], tmp_path: Path
) -> None:
    venv_bin, _ = installed_wheel
    clone = copy_clone(tmp_path / "clone")
    # The wheel's virtualenv already holds the dependencies (installing them again from the index
    # takes minutes); dni itself is replaced by pip's own build of the clone.
    run([venv_bin / "pip", "install", "--quiet", "--no-deps", "--force-reinstall", clone], tmp_path)
    (direct_url,) = (venv_bin.parent / "lib").glob(
        "python*/site-packages/dni-*.dist-info/direct_url.json"
    )
    assert json.loads(direct_url.read_text()) == {"url": clone.as_uri(), "dir_info": {}}
    assert_installed_app_serves(venv_bin, tmp_path / "elsewhere", (clone / BUILT).read_bytes())


def test_a_build_without_npm_says_what_to_install(tmp_path: Path) -> None:
    clone = copy_clone(tmp_path / "clone")
    no_npm = tmp_path / "bin"
    no_npm.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", tmp_path / "dist", clone],
        cwd=tmp_path,
        env=clean_env(str(no_npm)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "npm is not installed" in done.stdout + done.stderr
    assert not list((tmp_path / "dist").glob("*.tar.gz"))

"""The dashboard's UI is built from dashboard-ui/ and the build is committed in the package
(src/unspool/dashboard/static), so installing unspool needs no Node. These tests keep the
committed build true to its sources: the recorded hash of the sources must match them, and,
where Node is installed (always under CI=true), a fresh build must produce the same files."""

from __future__ import annotations

import filecmp
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from _servers import unavailable

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "dashboard-ui"
STATIC = ROOT / "src" / "unspool" / "dashboard" / "static"
FIXED = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts"]


def sources_hash() -> str:
    files = sorted([*FIXED, *(p.relative_to(UI).as_posix() for p in (UI / "src").rglob("*") if p.is_file())])
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0")
        digest.update((UI / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def test_the_committed_build_records_the_current_sources() -> None:
    info = json.loads((STATIC / "build-info.json").read_text())
    assert info["sources_sha256"] == sources_hash(), (
        "dashboard-ui/ changed since the committed build: run `make dashboard-ui` and commit "
        "src/unspool/dashboard/static"
    )
    page = (STATIC / "index.html").read_text()
    for asset in (STATIC / "assets").iterdir():
        assert asset.stat().st_size > 0
    assert "./assets/index-" in page


def test_a_fresh_build_produces_the_committed_files(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        unavailable("Node.js and npm are not installed: cannot rebuild the dashboard UI")
    work = tmp_path / "ui"
    shutil.copytree(UI, work, ignore=shutil.ignore_patterns("node_modules"))
    (work / "vite.config.ts").write_text(
        (UI / "vite.config.ts").read_text().replace('"../src/unspool/dashboard/static"', f'{json.dumps(str(tmp_path / "out"))}')
    )
    run = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=work, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        unavailable(f"npm ci failed (is the npm registry reachable?): {run.stderr[-2000:]}")
    built = subprocess.run(
        [npm, "exec", "--", "vite", "build", "--logLevel", "error"], cwd=work, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr[-4000:]
    out = tmp_path / "out"
    committed = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file() and p.name != "build-info.json")
    fresh = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert fresh == committed, "the committed build's files differ from a fresh build's: rebuild and commit"
    for name in fresh:
        assert filecmp.cmp(out / name, STATIC / name, shallow=False), f"{name} differs from a fresh build"

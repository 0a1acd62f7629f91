"""The contracts: stubs regenerate to exactly what is committed, and buf STANDARD lint passes."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def differences(left: Path, right: Path) -> list[str]:
    """Files that differ, or exist on one side only, between two trees."""
    found: list[str] = []
    compared = filecmp.dircmp(left, right, ignore=["__pycache__"])

    def walk(node: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(f"{prefix}{n} (only committed)" for n in node.left_only)
        found.extend(f"{prefix}{n} (only generated)" for n in node.right_only)
        _, mismatch, errors = filecmp.cmpfiles(
            node.left, node.right, node.common_files, shallow=False
        )
        found.extend(f"{prefix}{n} (differs)" for n in [*mismatch, *errors])
        for name, child in node.subdirs.items():
            walk(child, f"{prefix}{name}/")

    walk(compared, "")
    return found


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    fresh = tmp_path / "api"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "protogen.py"), "--out", str(fresh)],
        check=True,
        capture_output=True,
    )
    stale = differences(ROOT / "api", fresh)
    assert not stale, "stubs are stale; run `make protos`:\n" + "\n".join(stale)


def test_a_changed_proto_is_detected(tmp_path: Path) -> None:
    """The check above can fail: editing a contract changes the generated stubs."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos")
    shutil.copytree(ROOT / "tools", copy / "tools")
    proto = copy / "protos" / "berth" / "common" / "v1" / "version.proto"
    proto.write_text(proto.read_text().replace("string hostname = 7;", "string host = 7;"))
    subprocess.run(
        [sys.executable, str(copy / "tools" / "protogen.py"), "--out", str(copy / "api")],
        check=True,
        capture_output=True,
    )
    assert any("version_pb2" in d for d in differences(ROOT / "api", copy / "api"))


def test_contracts_pass_buf_standard_lint() -> None:
    assert BUF.exists(), "buf is missing: `make setup` installs it (package.json)"
    result = subprocess.run([str(BUF), "lint"], cwd=ROOT / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

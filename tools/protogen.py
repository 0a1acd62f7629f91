"""Generate the Python stubs in api/ from the contracts in protos/.

`make protos` runs this; tests/unit/test_stubs_fresh.py runs it into a temporary
folder and fails when the committed stubs differ, so the stubs never go stale.

protoc names Python modules after proto file paths (berth/network/v1/...), which
would collide with berth's own packages (berth.network is the agent). The stubs
therefore live under berth.api: every generated `berth.` import is rewritten to
`berth.api.`. The proto packages, and so the wire names, stay berth.<domain>.v1.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
API = ROOT / "api"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
IMPORT = re.compile(r"^(from|import) berth\.", re.MULTILINE)
API_INIT = '"""Generated gRPC stubs of the berth contracts (make protos). Do not edit."""\n'


def proto_files() -> list[Path]:
    return sorted(p.relative_to(PROTOS) for p in PROTOS.rglob("*.proto"))


def run_protoc(out: Path) -> None:
    bindir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *[str(p) for p in proto_files()],
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)


def generate(dest: Path) -> None:
    """Write the complete api/ tree into dest (which is replaced)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        run_protoc(raw)
        generated = raw / "berth"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for src in sorted(generated.rglob("*")):
            if src.is_dir():
                continue
            target = dest / src.relative_to(generated)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(IMPORT.sub(r"\1 berth.api.", src.read_text()))
        for folder in [dest, *sorted(p for p in dest.rglob("*") if p.is_dir())]:
            init = folder / "__init__.py"
            init.write_text(API_INIT if folder == dest else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=API, help="where to write the stubs")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()

"""Lint the API with buf and generate the Python stubs and Envoy's descriptor set, offline.

google/api and google/rpc sources come from the googleapis-common-protos wheel; protoc and the
well-known types from grpcio-tools; buf from the buf-bin wheel. Nothing is fetched.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import google.api
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
DEPS = ROOT / "build" / "proto-deps"
PY_OUT = PROTOS / "python"
DESCRIPTORS = ROOT / "build" / "hishamos.pb"
ERROR_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
BIN = Path(sys.executable).parent


def vendor_googleapis() -> None:
    """Copy the google/api, google/rpc and google/type .proto files shipped in googleapis-common-protos."""
    google_root = Path(next(iter(google.api.__path__))).parent
    for sub in ("api", "rpc", "type"):
        target = DEPS / "google" / sub
        target.mkdir(parents=True, exist_ok=True)
        for proto in (google_root / sub).glob("*.proto"):
            shutil.copyfile(proto, target / proto.name)


def buf_lint() -> None:
    print("==> buf lint (STANDARD)")
    subprocess.run([str(BIN / "buf"), "lint"], cwd=ROOT, check=True)


def generate() -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("hishamos/**/*.proto"))
    shutil.rmtree(PY_OUT / "hishamos", ignore_errors=True)
    DESCRIPTORS.parent.mkdir(parents=True, exist_ok=True)
    well_known = Path(next(iter(grpc_tools.__path__))) / "_proto"
    includes = ["grpc_tools.protoc", f"-I{PROTOS}", f"-I{DEPS}", f"-I{well_known}"]
    args = [
        *includes,
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={PY_OUT}",
        f"--grpc_python_out={PY_OUT}",
        f"--mypy_out=quiet:{PY_OUT}",
        f"--mypy_grpc_out=quiet:{PY_OUT}",
        *sources,
    ]
    print(f"==> protoc: {len(sources)} files -> {PY_OUT.relative_to(ROOT)}, {DESCRIPTORS.relative_to(ROOT)}")
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the errors above")
    # Envoy's descriptors also hold google.rpc's Status and error details, which no service imports:
    # with them its transcoder answers a JSON client's error as JSON, field violations and all.
    descriptors = [f"--descriptor_set_out={DESCRIPTORS}", "--include_imports", "--include_source_info"]
    if protoc.main([*includes, *descriptors, *sources, *ERROR_PROTOS]) != 0:
        raise SystemExit("protoc failed; see the errors above")
    for package_dir in (PY_OUT / "hishamos").rglob("*"):
        if package_dir.is_dir():
            (package_dir / "py.typed").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lint-only", action="store_true", help="run buf lint and stop")
    opts = parser.parse_args()
    vendor_googleapis()
    buf_lint()
    if not opts.lint_only:
        generate()


if __name__ == "__main__":
    main()

"""Generate the Python gRPC stubs for protos/sipec/v1 into sipec/v1 (never edit those by hand).

The proto import paths (sipec/v1/*.proto) equal the Python package path (sipec.v1), so the generated
modules import each other as `sipec.v1.common_pb2` without any path rewriting.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    src = ROOT / "protos"
    protos = sorted(str(p.relative_to(src)) for p in (src / "sipec" / "v1").glob("*.proto"))
    if not protos:
        print("gen_protos: no .proto files under protos/sipec/v1", file=sys.stderr)
        return 1
    well_known = str(resources.files("grpc_tools") / "_proto")
    out = ROOT / "sipec" / "v1"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{src}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"gen_protos: protoc failed with exit code {code}", file=sys.stderr)
        return code
    (out / "__init__.py").write_text('"""Generated from protos/sipec/v1 by scripts/gen_protos.py."""\n')
    print(f"gen_protos: {len(protos)} protos -> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

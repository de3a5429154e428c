"""The committed gRPC code is what protoc makes of the committed .proto files (run `make proto` if not)."""

from __future__ import annotations

import filecmp
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parents[1] / "protos"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "sharerank" / "v1").glob("*.proto"))
    assert sources, "no .proto files found"
    code = protoc.main(["protoc", f"-I{PROTOS}", f"-I{Path(protoc.__file__).parent / '_proto'}",
                        f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}",
                        *(str(PROTOS / s) for s in sources)])
    assert code == 0
    generated = sorted(p.name for p in (tmp_path / "sharerank" / "v1").iterdir())
    committed = sorted(p.name for p in (PROTOS / "sharerank" / "v1").iterdir()
                       if p.suffix in {".py", ".pyi"} and p.name != "__init__.py")
    assert generated == committed
    fresh, committed_dir = tmp_path / "sharerank" / "v1", PROTOS / "sharerank" / "v1"
    stale = [name for name in generated if not filecmp.cmp(fresh / name, committed_dir / name, shallow=False)]
    assert not stale, f"stale generated code, run `make proto`: {stale}"


def test_every_response_carries_the_model_version() -> None:
    from sharerank.v1 import admin_service_pb2, event_service_pb2, feed_service_pb2, seeding_service_pb2

    for module in (feed_service_pb2, seeding_service_pb2, event_service_pb2, admin_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert "model_version" in method.output_type.fields_by_name, f"{service.name}.{method.name}"

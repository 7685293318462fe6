"""Print every message, field, enum and RPC of one set of generated modules, one per line.

Run as ``python _descriptor_dump.py volley`` or ``python _descriptor_dump.py tritonclient``;
each runs in its own process because both register package ``inference`` in protobuf's pool.
"""

from __future__ import annotations

import sys
from typing import Any


def _walk_message(desc: Any, out: list[str]) -> None:
    for field in desc.fields:
        oneof = field.containing_oneof.name if field.containing_oneof else ""
        type_name = field.message_type.full_name if field.message_type else ""
        enum_name = field.enum_type.full_name if field.enum_type else ""
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
        out.append(
            f"field {desc.full_name}.{field.name} = {field.number} type={field.type} "
            f"repeated={repeated} msg={type_name} enum={enum_name} oneof={oneof}"
        )
    for enum in desc.enum_types:
        _walk_enum(enum, out)
    for nested in desc.nested_types:
        _walk_message(nested, out)


def _walk_enum(desc: Any, out: list[str]) -> None:
    for value in desc.values:
        out.append(f"enum {desc.full_name}.{value.name} = {value.number}")


def dump(which: str) -> list[str]:
    if which == "volley":
        from volley._proto.inference import grpc_service_pb2 as svc
        from volley._proto.inference import model_config_pb2 as cfg
    else:
        from tritonclient.grpc import model_config_pb2 as cfg
        from tritonclient.grpc import service_pb2 as svc
    out: list[str] = []
    for module in (svc, cfg):
        file_desc = module.DESCRIPTOR
        for msg in file_desc.message_types_by_name.values():
            _walk_message(msg, out)
        for enum in file_desc.enum_types_by_name.values():
            _walk_enum(enum, out)
        for service in file_desc.services_by_name.values():
            for method in service.methods:
                out.append(
                    f"rpc {service.full_name}.{method.name} #{method.index} "
                    f"{method.input_type.full_name} -> {method.output_type.full_name} "
                    f"cs={method.client_streaming} ss={method.server_streaming}"
                )
    return sorted(out)


if __name__ == "__main__":
    print("\n".join(dump(sys.argv[1])))

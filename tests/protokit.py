"""Protobuf for the tests, independent of kpipe's own loading code: ``.proto`` text compiled by
grpcio-tools' protoc, message classes built from the result, and a printer from a
``FileDescriptorProto`` back to ``.proto`` text (what a Confluent registry answers by default
for a schema registered in serialized form)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["PROTOS", "compile_texts", "compile_tree", "classes", "proto_text"]

PROTOS = Path(__file__).resolve().parent / "protos"

_F = descriptor_pb2.FieldDescriptorProto
_SCALAR_NAMES = {number: name[len("TYPE_"):].lower() for name, number in _F.Type.items()}


def compile_texts(files: dict[str, str], root: Path | None = None) -> list:
    """Every ``FileDescriptorProto`` (imports included) of ``files`` (import name -> text),
    compiled by protoc; imports are also looked up under ``root``. ``ValueError`` with protoc's
    message when it refuses."""
    import grpc_tools
    from google.type import date_pb2
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp, "src", name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        out = os.path.join(tmp, "out.pb")
        args = ["protoc", f"-I{tmp}/src", *([f"-I{root}"] if root else []),
                f"-I{os.path.join(os.path.dirname(grpc_tools.__file__), '_proto')}",
                f"-I{Path(date_pb2.__file__).parents[2]}",  # google/type/*.proto, as googleapis-common-protos ships them
                f"--descriptor_set_out={out}", "--include_imports", *files]
        if protoc.main(args) != 0:
            raise ValueError(f"protoc refused {sorted(files)}")
        return list(descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes()).file)


def compile_tree(*names: str, replace: dict | None = None) -> list:
    """The files ``names`` under tests/protos (``replace``: import name -> other text)."""
    files = {n: (replace or {}).get(n) or (PROTOS / n).read_text() for n in names}
    return compile_texts(files, PROTOS)


def classes(files: list) -> dict:
    """Message classes by full name (nested ones too) for ``files``, in a fresh pool."""
    pool = descriptor_pool.DescriptorPool()
    for f in files:
        pool.Add(f)
    out = {}

    def walk(desc):
        out[desc.full_name] = message_factory.GetMessageClass(desc)
        for n in desc.nested_types:
            walk(n)

    for f in files:
        for m in pool.FindFileByName(f.name).message_types_by_name.values():
            walk(m)
    return out


# -- FileDescriptorProto -> .proto text ------------------------------------------------------


def proto_text(fdp) -> str:
    """``.proto`` text that compiles back to ``fdp`` (proto2/proto3 messages, enums, oneofs,
    maps and ``optional``; options other than ``map_entry`` are left out)."""
    syntax = fdp.syntax or "proto2"
    lines = [f'syntax = "{syntax}";']
    if fdp.package:
        lines.append(f"package {fdp.package};")
    lines += [f'import "{d}";' for d in fdp.dependency]
    for e in fdp.enum_type:
        lines += _enum(e, "")
    for m in fdp.message_type:
        lines += _message(m, "", syntax)
    return "\n".join(lines) + "\n"


def _enum(e, pad: str) -> list:
    return [f"{pad}enum {e.name} {{", *(f"{pad}  {v.name} = {v.number};" for v in e.value), f"{pad}}}"]


def _type(f) -> str:
    return f.type_name if f.type_name else _SCALAR_NAMES[f.type]


def _message(m, pad: str, syntax: str) -> list:
    inner = pad + "  "
    maps = {n.name: n for n in m.nested_type if n.options.map_entry}
    out = [f"{pad}message {m.name} {{"]
    for e in m.enum_type:
        out += _enum(e, inner)
    for n in m.nested_type:
        if n.name not in maps:
            out += _message(n, inner, syntax)
    real_oneofs: dict[int, list] = {}
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            real_oneofs.setdefault(f.oneof_index, []).append(f)
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional:
            fields = real_oneofs.pop(f.oneof_index, None)
            if fields:  # the whole oneof where its first field is
                out.append(f"{inner}oneof {m.oneof_decl[f.oneof_index].name} {{")
                out += [f"{inner}  {_type(x)} {x.name} = {x.number};" for x in fields]
                out.append(f"{inner}}}")
            continue
        entry = maps.get(f.type_name.rsplit(".", 1)[-1]) if f.label == _F.LABEL_REPEATED else None
        if entry is not None:
            key, value = entry.field
            out.append(f"{inner}map<{_type(key)}, {_type(value)}> {f.name} = {f.number};")
            continue
        label = {_F.LABEL_REPEATED: "repeated ", _F.LABEL_REQUIRED: "required "}.get(f.label, "")
        if f.proto3_optional or (syntax == "proto2" and f.label == _F.LABEL_OPTIONAL):
            label = "optional "
        out.append(f"{inner}{label}{_type(f)} {f.name} = {f.number};")
    out.append(f"{pad}}}")
    return out

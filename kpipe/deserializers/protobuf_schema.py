"""Protobuf descriptors at run time, with no generated code: from a descriptor set, from
``.proto`` text (compiled by protoc), or from a Schema Registry with its references.

Every schema gets its own ``DescriptorPool``: two versions of one ``orders.proto`` (schema
evolution) define the same names, which one pool would refuse.

``.proto`` text is compiled by the protoc that grpcio-tools bundles (``python -m
grpc_tools.protoc`` in a subprocess, so its error text can be shown and a hang has a timeout):
the ``protobuf`` package itself has no ``.proto`` parser, and grpcio-tools is the one wheel that
ships protoc, with the well-known ``google/protobuf/*.proto`` files, for every platform.
"""
from __future__ import annotations

import base64
import binascii
import importlib
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from typing import Any

from kpipe.api import FatalError

from .registry import NotFound, RegistryClient

__all__ = ["pool_of", "read_descriptor_set", "compile_proto", "compile_file", "find_message", "message_at",
           "RegistrySchemas", "ProtocError", "PROTOC_TIMEOUT"]

PROTOC_TIMEOUT = 60.0  # seconds one protoc run may take
# Imports that serializers never register (Confluent's skip.known.types): the packages that ship
# their compiled descriptors, by import prefix. protoc (grpcio-tools) has only google/protobuf's text.
_BUNDLED = (("google/protobuf/", "google.protobuf."), ("google/type/", "google.type."),
            ("confluent/", "confluent_kafka.schema_registry.confluent."))
_IMPORT_NAME = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+)*\.proto")
_IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"', re.MULTILINE)


class ProtocError(Exception):
    """protoc refused the text (its own message, one line per problem)."""


def bundled(name: str):
    """The ``FileDescriptorProto`` of an import that a package ships compiled
    (``google/protobuf/*``, ``google/type/*`` from googleapis-common-protos, ``confluent/*``
    from confluent-kafka), or None."""
    from google.protobuf import descriptor_pb2

    if not _IMPORT_NAME.fullmatch(name):
        return None
    for prefix, package in _BUNDLED:
        if name.startswith(prefix):
            module = package + name[len(prefix):-len(".proto")].replace("/", ".") + "_pb2"
            try:
                desc = importlib.import_module(module).DESCRIPTOR
            except ImportError:
                return None
            return descriptor_pb2.FileDescriptorProto.FromString(desc.serialized_pb) if desc.name == name else None
    return None


def pool_of(files: list) -> Any:
    """A new ``DescriptorPool`` holding ``files`` (``FileDescriptorProto`` objects, in any order)
    and the well-known files they import but do not include. ``ValueError`` naming what is
    missing or inconsistent."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    by_name = {f.name: f for f in files}
    added: set = set()

    def add(name: str, trail: tuple) -> None:
        if name in added:
            return
        if name in trail:
            raise ValueError(f"{name} imports itself (through {' -> '.join(trail)})")
        fdp = by_name.get(name) or bundled(name)
        if fdp is None:
            raise ValueError(f"{trail[-1] if trail else 'the schema'} imports {name}, which is not given")
        for dep in fdp.dependency:
            add(dep, trail + (name,))
        pool.Add(fdp)
        added.add(name)

    for f in files:
        add(f.name, ())
    return pool


def read_descriptor_set(data: bytes, what: str) -> list:
    """The files of a serialized ``FileDescriptorSet``; ``FatalError`` when it is not one."""
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError

    try:
        files = list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
    except DecodeError as exc:
        raise FatalError(f"protobuf: {what} is not a FileDescriptorSet ({exc}); write one with "
                         f"protoc --descriptor_set_out=FILE --include_imports") from None
    if not files:
        raise FatalError(f"protobuf: {what} holds no .proto file")
    return files


def compile_proto(sources: dict[str, str], known: list = ()) -> list:
    """The ``FileDescriptorProto`` of each of ``sources`` (import name -> ``.proto`` text) and of
    what they import, compiled by protoc; ``known``: imports given as ``FileDescriptorProto``
    objects rather than text (``bundled`` ones are added). ``ProtocError`` with protoc's message
    when the text does not compile; ``FatalError`` when grpcio-tools is not installed."""
    known = list(known)
    have = {f.name for f in known} | set(sources)
    for text in sources.values():
        for name in _IMPORT.findall(text):
            if name not in have and not name.startswith("google/protobuf/"):  # protoc has those
                found = bundled(name)
                if found is not None:
                    known.append(found)
                    have.add(name)
    with tempfile.TemporaryDirectory(prefix="kpipe-proto-") as tmp:
        src = os.path.join(tmp, "src")
        for name, text in sources.items():
            path = os.path.normpath(os.path.join(src, name))
            if not path.startswith(src + os.sep):
                raise ProtocError(f"import name {name!r} leaves the source tree")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return _protoc(src, list(sources), known, tmp)


def compile_file(path: str, root: str | None = None) -> list:
    """``compile_proto`` for a ``.proto`` file on disk; its imports are found relative to
    ``root`` (protoc's ``-I``; default: the file's directory), the well-known ones in grpcio-tools."""
    root = os.path.abspath(root or os.path.dirname(path) or ".")
    name = os.path.relpath(os.path.abspath(path), root)
    if name.startswith(os.pardir + os.sep):
        raise ProtocError(f"{path} is not under import_path {root}")
    with tempfile.TemporaryDirectory(prefix="kpipe-proto-") as tmp:
        return _protoc(root, [name], (), tmp)


def _protoc(root: str, names: list, known, tmp: str) -> list:
    try:
        import grpc_tools
    except ImportError:
        raise FatalError('protobuf: .proto text needs protoc, from grpcio-tools: '
                         'run: pip install "kpipe[protobuf]"') from None
    bundled = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    out = os.path.join(tmp, "set.pb")
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", f"-I{bundled}",
            f"--descriptor_set_out={out}", "--include_imports"]
    if known:
        from google.protobuf import descriptor_pb2

        with open(os.path.join(tmp, "known.pb"), "wb") as f:
            f.write(descriptor_pb2.FileDescriptorSet(file=known).SerializeToString())
        args.append(f"--descriptor_set_in={os.path.join(tmp, 'known.pb')}")
    try:
        proc = subprocess.run(args + names, capture_output=True, text=True, timeout=PROTOC_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FatalError(f"protobuf: protoc took more than {PROTOC_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        lines = [line.replace(root + os.sep, "") for line in proc.stderr.strip().splitlines()]
        raise ProtocError("; ".join(lines) or f"protoc exited with {proc.returncode}")
    with open(out, "rb") as f:
        return read_descriptor_set(f.read(), "protoc's output")


def find_message(pool, full_name: str, what: str):
    """The descriptor of message ``full_name`` in ``pool``; ``FatalError`` listing the
    messages there when it has none of that name."""
    try:
        return pool.FindMessageTypeByName(full_name.lstrip("."))
    except KeyError:
        raise FatalError(f"protobuf: {what} has no message {full_name!r}") from None


def message_at(file_desc, indexes: tuple):
    """The message the wire header's ``indexes`` name in ``file_desc``; ``IndexError`` when
    there is none."""
    types = list(file_desc.message_types_by_name.values())
    desc = None
    for i in indexes:
        if i >= len(types):
            raise IndexError(f"message index {i} of {list(indexes)}: the schema has {len(types)} "
                             f"message(s) there")
        desc = types[i]
        types = desc.nested_types
    if desc is None:
        raise IndexError("no message index")
    return desc


class RegistrySchemas:
    """Loads schema ids from a Confluent Schema Registry into pools: ``load(sid)`` is
    ``(pool, the schema's FileDescriptor)``; ``NotFound`` for an id the registry lacks, or one
    that is not a usable Protobuf schema.

    Asks for ``format=serialized`` (base64 of the ``FileDescriptorProto``), as Confluent's own
    deserializer does; a registry that answers with ``.proto`` text anyway (older ones ignore
    the parameter) is compiled with protoc. References (imports) are loaded the same way, by
    subject and version; ``google/protobuf/*`` imports come from the protobuf package.
    """

    def __init__(self, client: RegistryClient):
        self.client = client

    def load(self, sid: int):
        what = f"schema id {sid}"
        try:
            doc = self.client.get(f"/schemas/ids/{sid}?format=serialized")
        except NotFound as exc:
            raise NotFound(f"{what} is not in the schema registry {self.client.display_url} ({exc})") from None
        main = f"kpipe-schema-{sid}.proto"
        texts: dict[str, str] = {}
        files: dict[str, Any] = {}
        main_fdp = self._file(doc, main, what, texts, files)
        self._references(doc, what, texts, files, set())
        try:
            if texts:  # some came as text: compile all of it (serialized ones as their text)
                compiled = compile_proto(texts, known=list(files.values()))
                files = {f.name: f for f in compiled}
                main_fdp = files[main] if main in files else main_fdp
            pool = pool_of(list(files.values()))
            return pool, pool.FindFileByName(main_fdp.name if main_fdp is not None else main)
        except (ValueError, TypeError, KeyError, ProtocError) as exc:
            raise NotFound(f"{what} in {self.client.display_url} is not a usable Protobuf schema: {exc}") from None

    def _file(self, doc: Any, name: str, what: str, texts: dict, files: dict):
        """The ``FileDescriptorProto`` of a registry answer, kept in ``files``; or None, with its
        text kept in ``texts`` under ``name``."""
        from google.protobuf import descriptor_pb2
        from google.protobuf.message import DecodeError

        text = self.client.schema_text(doc, "PROTOBUF", what)
        try:
            data = base64.b64decode(text, validate=True)
            fdp = descriptor_pb2.FileDescriptorProto.FromString(data)
        except (binascii.Error, ValueError, DecodeError):
            texts[name] = text
            return None
        if not fdp.name:
            fdp.name = name
        files[fdp.name] = fdp
        return fdp

    def _references(self, doc: Any, of: str, texts: dict, files: dict, seen: set) -> None:
        for ref in self.client.references(doc, of):
            name, subject, version = ref["name"], ref["subject"], ref["version"]
            if name in seen:
                continue
            seen.add(name)
            quoted = urllib.parse.quote(str(subject), safe="")
            what = f"reference {name!r} ({subject} version {version})"
            try:
                ref_doc = self.client.get(f"/subjects/{quoted}/versions/{version}?format=serialized")
            except NotFound as exc:
                raise NotFound(f"{what} is not in the schema registry {self.client.display_url} ({exc})") from None
            fdp = self._file(ref_doc, name, what, texts, files)
            if fdp is not None and fdp.name != name:  # imported by this name: keep it so
                del files[fdp.name]
                fdp.name = name
                files[name] = fdp
            self._references(ref_doc, what, texts, files, seen)

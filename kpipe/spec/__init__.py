"""Pipeline specs: load a YAML file, validate it, and get a normalized ``Spec``.

Every problem is reported at once, each as ``FILE:LINE:COL: PATH: MESSAGE``::

    try:
        spec = load_spec("orders.yaml")
    except SpecError as err:
        print(err)  # one problem per line, in file order
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from kpipe import redact
from kpipe.safe_read import UnreadableFile, read_regular_file

from .model import Spec, build_spec, collect_secrets
from .problems import Problem, SpecError, format_path, in_file_order
from .schema import pipeline_schema
from .units import parse_duration, parse_size
from .validate import validate_document
from .yamlnodes import parse_document

__all__ = ["load_spec", "Spec", "SpecError", "Problem", "format_path",
           "pipeline_schema", "parse_size", "parse_duration", "MAX_SPEC_BYTES"]

MAX_SPEC_BYTES = 1 << 20  # a spec is a few KB; more is a mistake, and costs seconds to compose


def load_spec(path: str, env: Mapping[str, str] | None = None) -> Spec:
    """Read, interpolate and validate the spec at ``path``; raise ``SpecError`` listing every problem.

    ``env`` supplies ``${VAR}`` values and defaults to ``os.environ``. The spec's secrets
    (``Spec.secrets``) are registered with ``kpipe.redact``, so logs never show them.
    """
    file = str(path)
    env = os.environ if env is None else env
    try:
        text = read_regular_file(file, MAX_SPEC_BYTES, "the spec").decode("utf-8")
    except UnreadableFile as exc:  # missing, a FIFO or a device (never opened), or too big
        raise SpecError([Problem(file, 1, 1, format_path(()), f"cannot read the spec: {exc.reason}")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(file, 1, 1, format_path(()), f"cannot read the spec: {exc}")]) from None
    doc = parse_document(text, file, env)
    found = validate_document(doc)
    # Secrets are known from here on; no message, log line or problem prints them.
    redact.register(collect_secrets(doc))
    found = [dataclasses.replace(p, message=redact.redact(p.message)) for p in found]
    errors = [p for p in found if p.severity != "warning"]
    if errors:
        raise SpecError(errors)
    warnings = tuple(in_file_order(p for p in found if p.severity == "warning"))
    return dataclasses.replace(build_spec(doc), warnings=warnings)

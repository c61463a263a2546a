"""Hostile or broken spec files (issue 13, defect 5): every command that loads a spec answers
with one ``FILE[:LINE:COL]: ...`` line and exit 1, in about a second and bounded memory, for
nesting too deep to build, alias bombs, huge files and files that are not regular files (a
FIFO would block the command forever). The same holds for the files a spec makes kpipe read:
JSON Schemas, ``.avsc`` schemas and ``${file:}`` secrets.

Each command runs as a real subprocess under a 1 GiB address-space limit, so a regression
fails here instead of eating the machine, and with a timeout, so a blocking read fails too.
"""
from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit import kpipe_cmd
from kpipe.safe_read import UnreadableFile, read_regular_file
from kpipe.spec import SpecError, load_spec
from kpipe.spec.yamlnodes import MAX_DEPTH, MAX_NODES, parse_document
from kpipe.validation import MAX_JSON_DEPTH, read_json_file

GiB = 1 << 30
SECONDS = 5.0  # each case takes well under a second; generous against a busy machine

FIFO = "it is a FIFO (named pipe), not a regular file"
OK_SPEC = "name: ok\nsource: {brokers: b, topic: t}\nsink: {type: files, path: ./out}\n"


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (GiB, GiB))


def kpipe(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run the real command line; (the finished process, seconds it took)."""
    start = time.monotonic()
    proc = subprocess.run(kpipe_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=60,
                          stdin=subprocess.DEVNULL, preexec_fn=_limit_memory)
    return proc, time.monotonic() - start


def refused(proc: subprocess.CompletedProcess, elapsed: float, prefix: str) -> str:
    """Assert the one-line refusal every hostile input must get; return that line."""
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[:2000]
    assert lines[0].startswith(prefix), lines[0]
    assert proc.returncode == 1, proc.returncode
    assert elapsed < SECONDS, f"took {elapsed:.1f} s"
    return lines[0]


def deep_spec(levels: int) -> str:
    return "name: x\nsource: " + "[" * levels + "]" * levels + "\n"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """"Billion laughs": each anchor holds ``width`` aliases of the one before; 1.3 KB of YAML
    that expands to width**levels values."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


# -- the spec file itself, through `kpipe validate` ---------------------------------------------


def test_nesting_twenty_thousand_levels_deep_is_one_line_at_its_position(tmp_path):
    (tmp_path / "deep.yaml").write_text(deep_spec(20_000))
    line = refused(*kpipe("validate", "deep.yaml", cwd=tmp_path), "deep.yaml:2:")
    # The root mapping is level 1, `source:`'s list level 2, at column 9.
    # The path names the top-level key; line and column point at the first node past the limit.
    assert line == f"deep.yaml:2:{MAX_DEPTH + 8}: source: nested more than {MAX_DEPTH} levels deep; " \
                   "a spec needs only a few"


def test_a_billion_laughs_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    text = alias_bomb()
    assert len(text) < 1500
    (tmp_path / "bomb.yaml").write_text(text)
    line = refused(*kpipe("validate", "bomb.yaml", cwd=tmp_path), "bomb.yaml:")
    assert f"aliases expand to more than {MAX_NODES:,} values" in line


def test_a_spec_of_megabytes_is_refused_before_it_is_read_whole(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "".join(f"k{i}: {'v' * 60}\n" for i in range(110_000)))
    assert big.stat().st_size > 7 << 20
    line = refused(*kpipe("validate", "big.yaml", cwd=tmp_path), "big.yaml:1:1: <root>: ")
    assert line.endswith("cannot read the spec: it is 7.2 MiB, more than the 1 MiB allowed")


def test_a_flat_spec_of_too_many_values_is_refused_at_the_value_past_the_limit(tmp_path):
    # Under 1 MiB, yet more values than any spec has: stopped while composing, not validated.
    (tmp_path / "wide.yaml").write_text("name: x\nsource: [" + "1," * (MAX_NODES + 10) + "1]\n")
    line = refused(*kpipe("validate", "wide.yaml", cwd=tmp_path), "wide.yaml:2:")
    assert line.endswith(f"the spec holds more than {MAX_NODES:,} values; a spec needs only a few hundred")


@pytest.mark.parametrize("command", ["validate", "run", "test", "check", "lag"])
def test_a_fifo_given_as_the_spec_is_refused_without_blocking(tmp_path, command):
    os.mkfifo(tmp_path / "fifo.yaml")
    line = refused(*kpipe(command, "fifo.yaml", cwd=tmp_path), "fifo.yaml:1:1: <root>: ")
    assert line.endswith(f"cannot read the spec: {FIFO}")


@pytest.mark.parametrize("command", ["validate", "run", "test", "check", "lag"])
def test_a_deep_spec_is_refused_by_every_command_that_loads_one(tmp_path, command):
    (tmp_path / "deep.yaml").write_text(deep_spec(5000))
    refused(*kpipe(command, "deep.yaml", cwd=tmp_path), "deep.yaml:2:")


def test_a_fifo_inside_a_directory_of_specs_does_not_block_kpipe_run(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "a.yaml").write_text(OK_SPEC)
    os.mkfifo(specs / "b.yaml")
    refused(*kpipe("run", "specs", cwd=tmp_path), f"{os.path.join('specs', 'b.yaml')}:1:1: <root>: cannot read")


def _socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


@pytest.mark.parametrize("name, make, kind", [
    ("dir.yaml", Path.mkdir, "a directory"),
    ("s.yaml", _socket, "a socket"),
    ("/dev/zero", None, "a character device"),
])
def test_other_files_that_are_not_regular_are_refused(tmp_path, name, make, kind):
    made = make(tmp_path / name) if make is not None else None
    line = refused(*kpipe("validate", name, cwd=tmp_path), f"{name}:1:1: <root>: ")
    assert line.endswith(f"cannot read the spec: it is {kind}, not a regular file")
    if made is not None:
        made.close()


# -- files a spec names ------------------------------------------------------------------------


def spec_naming(tmp_path: Path, deserializer: str, sink_path: str = "./out") -> Path:
    (tmp_path / "s.yaml").write_text(
        f"name: s\nsource: {{brokers: b, topic: t}}\ndeserializer: {deserializer}\n"
        f"sink: {{type: files, path: \"{sink_path}\"}}\n"
        "tests:\n  - input: {value: {a: 1}}\n    expect: {value: {a: 1}}\n")
    return tmp_path / "s.yaml"


def _deep_json(path: Path) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)


def _deep_avsc(path: Path) -> None:
    path.write_text('{"type": ' * 5000 + '"int"' + "}" * 5000)


DEEP = f"nested more than {MAX_JSON_DEPTH} levels deep"


@pytest.mark.parametrize("command", ["validate", "test", "run"])
@pytest.mark.parametrize("deserializer, name, make, at, expected", [
    ("{type: json, validate: schema.json}", "schema.json", os.mkfifo, "3:38: deserializer.validate", FIFO),
    ("{type: json, validate: schema.json}", "schema.json", _deep_json, "3:38: deserializer.validate", DEEP),
    ("{type: avro, schema: o.avsc}", "o.avsc", os.mkfifo, "3:36: deserializer.schema", FIFO),
    ("{type: avro, schema: o.avsc}", "o.avsc", _deep_avsc, "3:36: deserializer.schema", DEEP),
], ids=["fifo-json-schema", "deep-json-schema", "fifo-avsc", "deep-avsc"])
def test_a_file_the_spec_names_is_refused_at_its_key(tmp_path, command, deserializer, name, make, at, expected):
    make(tmp_path / name)
    spec_naming(tmp_path, deserializer)
    line = refused(*kpipe(command, "s.yaml", cwd=tmp_path), f"s.yaml:{at}: ")
    assert expected in line


def test_a_secret_file_that_is_a_fifo_is_refused_at_its_reference(tmp_path):
    os.mkfifo(tmp_path / "pw")
    spec_naming(tmp_path, "{type: json}", sink_path="out/${file:pw}")
    line = refused(*kpipe("validate", "s.yaml", cwd=tmp_path), "s.yaml:4:32: sink.path: ")
    assert line.endswith(f"cannot read secret file pw: {FIFO}")


def test_kpipe_test_fails_each_case_when_the_deserializer_cannot_start(tmp_path):
    # Not an .avsc by name, so only its type is checked at load; the avro plugin's FatalError
    # when it starts is every case's failure, not a traceback.
    _deep_avsc(tmp_path / "o.schema")
    spec_naming(tmp_path, "{type: avro, schema: o.schema}")
    assert kpipe("validate", "s.yaml", cwd=tmp_path)[0].returncode == 0
    proc, elapsed = kpipe("test", "s.yaml", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "")
    schema = tmp_path / "o.schema"
    assert f'"crash": "FatalError: avro schema: {schema} is {DEEP}"' in proc.stdout
    assert proc.stdout.endswith("s.yaml: 0 passed, 1 failed\n") and elapsed < SECONDS


def test_read_json_file_refuses_deep_and_fifo_files_with_fatal_errors(tmp_path):
    from kpipe.api import FatalError

    (tmp_path / "deep.avsc").write_text('{"type":' * 5000 + '"int"' + "}" * 5000)
    with pytest.raises(FatalError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        read_json_file("deep.avsc", str(tmp_path / "s.yaml"), "avro schema")
    os.mkfifo(tmp_path / "f.json")
    with pytest.raises(FatalError, match="FIFO"):
        read_json_file("f.json", str(tmp_path / "s.yaml"), "validate")
    nested = {"type": "object", "properties": {}}
    node = nested
    for _ in range(MAX_JSON_DEPTH // 2 - 2):  # `properties` and the name: two levels each
        node["properties"]["x"] = {"type": "object", "properties": {}}
        node = node["properties"]["x"]
    (tmp_path / "ok.json").write_text(json.dumps(nested))
    assert read_json_file("ok.json", str(tmp_path / "s.yaml"), "validate")[1] == nested


# -- the reader ----------------------------------------------------------------------------


def test_read_regular_file_reads_at_most_the_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_regular_file(str(path), 10, "f") == b"x" * 10
    with pytest.raises(UnreadableFile, match="it is 10 bytes, more than the 9 bytes allowed"):
        read_regular_file(str(path), 9, "f")
    with pytest.raises(UnreadableFile, match="No such file"):
        read_regular_file(str(tmp_path / "nope"), 9, "f")


# -- below the limits, the loader is PyYAML's safe_load with positions ----------------------------


def _nested(depth: int, leaf, wrap: list) -> object:
    value = leaf
    for kind in wrap[:depth]:
        value = [value] if kind else {"k": value}
    return value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, MAX_DEPTH + 30), wrap=st.lists(st.booleans(), min_size=MAX_DEPTH + 30,
                                                         max_size=MAX_DEPTH + 30),
       flow=st.booleans())
def test_nesting_up_to_the_limit_loads_as_safe_load_and_past_it_is_one_problem(depth, wrap, flow):
    data = {"root": _nested(depth, 1, wrap)}
    text = yaml.safe_dump(data, default_flow_style=flow, width=1 << 20)
    levels = depth + 2  # the document's mapping, `root`'s value and `depth` collections under it
    if levels <= MAX_DEPTH:
        assert parse_document(text, "d.yaml", {}).data == yaml.safe_load(text) == data
    else:
        with pytest.raises(SpecError) as err:
            parse_document(text, "d.yaml", {})
        (problem,) = err.value.problems
        assert f"nested more than {MAX_DEPTH} levels deep" in problem.message
        assert problem.line >= 1 and problem.col >= 1


def _list_size(i: int, width: int) -> int:
    """Values anchor ``a<i>``'s list expands to: itself and ``width`` items, each a scalar or
    an alias of the list before."""
    return 1 + width * (1 if i == 0 else _list_size(i - 1, width))


@settings(max_examples=25, deadline=None)
@given(levels=st.integers(1, 8), width=st.integers(1, 12), merge=st.booleans())
def test_aliases_expand_as_safe_load_up_to_the_bound_and_past_it_are_one_problem(levels, width, merge):
    text = alias_bomb(levels, width)
    # Every value as if written out in full: the root mapping, and each key and its list.
    expanded = 1 + sum(1 + _list_size(i, width) for i in range(levels))
    if merge:  # a merge key of a mapping anchor counts like any alias
        text += "m: &m {p: 1, q: 2}\nn: {<<: *m, r: 3}\n"
        expanded += (1 + 5) + (1 + 1 + 1 + 5 + 2)
    if expanded <= MAX_NODES:
        assert parse_document(text, "a.yaml", {}).data == yaml.safe_load(text)
    else:
        with pytest.raises(SpecError) as err:
            parse_document(text, "a.yaml", {})
        (problem,) = err.value.problems
        assert f"aliases expand to more than {MAX_NODES:,} values" in problem.message


def test_alias_counting_is_exact_at_the_bound():
    # The root, key `a` and its list of n items, key `b` and the list again: 5 + 2n values.
    n = (MAX_NODES - 5) // 2
    text = "a: &a [" + ", ".join(["1"] * n) + "]\nb: *a\n"
    assert parse_document(text, "e.yaml", {}).data == yaml.safe_load(text)
    text = "a: &a [" + ", ".join(["1"] * (n + 1)) + "]\nb: *a\n"
    with pytest.raises(SpecError) as err:
        parse_document(text, "e.yaml", {})
    assert [str(p) for p in err.value.problems] == [
        f"e.yaml:2:4: b: aliases expand to more than {MAX_NODES:,} values; a spec needs only a few hundred"]


def test_a_valid_spec_still_loads(tmp_path):
    (tmp_path / "ok.yaml").write_text(OK_SPEC)
    assert load_spec(str(tmp_path / "ok.yaml"), env={}).name == "ok"


def test_a_fifo_as_the_files_sinks_avro_schema_fails_the_run_instead_of_blocking_it(tmp_path):
    os.mkfifo(tmp_path / "o.avsc")
    (tmp_path / "s.yaml").write_text(
        'name: s\nsource: {brokers: "127.0.0.1:1", topic: t}\n'
        "sink: {type: files, path: ./out, format: avro, avro_schema: o.avsc}\n")
    proc, elapsed = kpipe("run", "s.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"avro_schema: cannot read ./o.avsc: {FIFO}" in proc.stderr
    assert "Traceback" not in proc.stderr and elapsed < SECONDS


def test_kpipe_run_names_the_spec_when_its_deserializer_cannot_start(tmp_path):
    # Not an .avsc by name, so `validate` passes it; `run` must still fail in one line, not a traceback.
    _deep_avsc(tmp_path / "o.schema")
    spec_naming(tmp_path, "{type: avro, schema: o.schema}")
    line = refused(*kpipe("run", "s.yaml", cwd=tmp_path), "s.yaml: avro schema: ")
    assert line.endswith(DEEP)

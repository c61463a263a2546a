"""How kpipe treats what is installed through its entry points: a plugin that fails to load, a
name two distributions claim, a plugin for a newer API, and a guarantee a spec asks of a sink
that does not declare it.

Each test builds real distributions (a ``.dist-info`` with ``entry_points.txt``, as pip installs
them) in a directory put on ``PYTHONPATH`` of a ``kpipe`` subprocess, so the running
environment is never changed.
"""
from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from kit import run_kpipe

SINK_MODULE = '''
from kpipe.api import Capabilities, SinkPlugin

plugin = SinkPlugin(
    name="{name}",
    config_schema={{"type": "object", "properties": {{"url": {{"type": "string"}}}},
                   "additionalProperties": False}},
    factory="builtins:object",  # never run here: validation only needs the descriptor
    capabilities=Capabilities(stores_offsets={stores}, idempotent_writes={idem}),
    api_version={api},
)
'''


def make_dist(site: Path, dist: str, sinks: dict[str, str], modules: dict[str, str]) -> None:
    """A distribution ``dist`` in ``site``: its modules, and ``kpipe.sinks`` entry points
    ``name = module:attr``."""
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(
        "[kpipe.sinks]\n" + "".join(f"{n} = {target}\n" for n, target in sinks.items()))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


def sink_module(name: str, stores=False, idem=False, api=1) -> str:
    return SINK_MODULE.format(name=name, stores=stores, idem=idem, api=api)


def kpipe(site: Path, *args: str):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return run_kpipe(*args, env=env)


def write_spec(tmp_path: Path, sink_type: str, **extra) -> Path:
    spec = tmp_path / "spec.yaml"
    lines = ["name: registry-test"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines += ["source:", "  brokers: 127.0.0.1:9", "  topic: t", "sink:", f"  type: {sink_type}",
              "  url: http://example.invalid/"]
    spec.write_text("\n".join(lines) + "\n")
    return spec


def position(spec: Path, text: str) -> str:
    """``FILE:LINE:COL`` of the first occurrence of ``text`` in ``spec``."""
    for n, line in enumerate(spec.read_text().splitlines(), 1):
        if text in line:
            return f"{spec}:{n}:{line.index(text) + 1}"
    raise AssertionError(f"{text!r} not in {spec}")


@pytest.fixture
def site(tmp_path):
    return tmp_path / "site"


def test_a_plugin_that_fails_to_import_is_a_warning_when_unused(site, tmp_path):
    make_dist(site, "kpipe-broken", {"broken": "kpipe_broken:plugin"},
              {"kpipe_broken": "import no_such_module_anywhere\n"})
    listing = kpipe(site, "plugins")
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"sink\s+broken\s+BROKEN: kpipe-broken 1.2.3: ModuleNotFoundError", listing.stdout)
    assert "files" in listing.stdout  # the others still load

    spec = write_spec(tmp_path, "files")
    spec.write_text(spec.read_text().replace("  url: http://example.invalid/", f"  path: {tmp_path}/out"))
    checked = kpipe(site, "validate", str(spec))
    assert checked.returncode == 0, checked.stderr
    assert "WARNING" in checked.stderr and "'broken' from kpipe-broken 1.2.3 failed to load" in checked.stderr
    assert "no_such_module_anywhere" in checked.stderr


def test_a_plugin_that_fails_to_import_is_an_error_at_the_spec_line_that_uses_it(site, tmp_path):
    make_dist(site, "kpipe-broken", {"broken": "kpipe_broken:plugin"},
              {"kpipe_broken": "raise RuntimeError('needs libfoo 3')\n"})
    spec = write_spec(tmp_path, "broken")
    checked = kpipe(site, "validate", str(spec))
    assert checked.returncode == 1
    assert (f"{position(spec, 'broken')}: sink.type: sink plugin 'broken' is installed but cannot be "
            f"used: kpipe-broken 1.2.3: RuntimeError: needs libfoo 3") in checked.stderr


def test_a_name_claimed_by_two_distributions_is_an_error_naming_both(site, tmp_path):
    make_dist(site, "kpipe-webhook-a", {"webhook": "hook_a:plugin"}, {"hook_a": sink_module("webhook")})
    make_dist(site, "kpipe-webhook-b", {"webhook": "hook_b:plugin"}, {"hook_b": sink_module("webhook")})
    listing = kpipe(site, "plugins")
    assert listing.returncode == 1
    assert "error: sink plugin name 'webhook' is claimed by kpipe-webhook-a and kpipe-webhook-b" in listing.stderr

    spec = write_spec(tmp_path, "webhook")
    checked = kpipe(site, "validate", str(spec))
    assert checked.returncode == 1
    line = next(x for x in checked.stderr.splitlines() if x.startswith(position(spec, "webhook")))
    assert "kpipe-webhook-a" in line and "kpipe-webhook-b" in line, checked.stderr


def test_a_plugin_may_not_take_a_built_in_name(site, tmp_path):
    make_dist(site, "kpipe-files2", {"files": "files2:plugin"}, {"files2": sink_module("files")})
    listing = kpipe(site, "plugins")
    assert listing.returncode == 1
    assert "'files' is claimed by kpipe and kpipe-files2" in listing.stderr


def test_a_plugin_for_a_newer_api_is_refused_with_the_fix(site, tmp_path):
    make_dist(site, "kpipe-future", {"future": "future_sink:plugin"},
              {"future_sink": sink_module("future", api=99)})
    spec = write_spec(tmp_path, "future")
    checked = kpipe(site, "validate", str(spec))
    assert checked.returncode == 1
    assert "built for kpipe plugin API 99, this kpipe has API 1: upgrade kpipe" in checked.stderr


def test_an_entry_point_that_is_not_a_descriptor_is_refused(site, tmp_path):
    make_dist(site, "kpipe-odd", {"odd": "odd_sink:plugin"}, {"odd_sink": "plugin = 'not a descriptor'\n"})
    listing = kpipe(site, "plugins", "--json")
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert "not a kpipe.api plugin descriptor" in rows["odd"]["error"]
    assert rows["files"]["capabilities"] == ["stores_offsets", "idempotent_writes", "alter_offsets"]
    # a number is listed only where it differs from the default
    assert "max_in_flight=4" in rows["s3"]["capabilities"]


def test_exactly_once_asked_of_a_sink_that_declares_no_way_to_keep_it_is_a_warning(site, tmp_path):
    make_dist(site, "kpipe-plain", {"plain": "plain_sink:plugin"}, {"plain_sink": sink_module("plain")})
    spec = write_spec(tmp_path, "plain", delivery="exactly-once")
    checked = kpipe(site, "validate", str(spec))
    assert checked.returncode == 0, checked.stderr  # a warning: the spec still runs
    where = position(spec, "exactly-once")
    warning = next((x for x in checked.stderr.splitlines() if where in x), None)
    assert warning is not None, checked.stderr
    assert "WARNING" in warning and "delivery: sink 'plain' declares neither stores_offsets nor " \
                                   "idempotent_writes" in warning
    assert "files" in warning  # the sinks that do declare one

    spec = write_spec(tmp_path, "plain", delivery="at-least-once")
    quiet = kpipe(site, "validate", str(spec))
    assert quiet.returncode == 0 and "WARNING" not in quiet.stderr, quiet.stderr


@pytest.mark.parametrize("caps", [{"stores": True}, {"idem": True}])
def test_exactly_once_is_kept_by_a_sink_that_declares_either_capability(site, tmp_path, caps):
    make_dist(site, "kpipe-good", {"good": "good_sink:plugin"}, {"good_sink": sink_module("good", **caps)})
    spec = write_spec(tmp_path, "good", delivery="exactly-once")
    checked = kpipe(site, "validate", str(spec))
    assert checked.returncode == 0 and "WARNING" not in checked.stderr, checked.stderr


def test_the_warning_follows_the_log_format(site, tmp_path):
    make_dist(site, "kpipe-plain", {"plain": "plain_sink:plugin"}, {"plain_sink": sink_module("plain")})
    spec = write_spec(tmp_path, "plain", delivery="exactly-once")
    checked = kpipe(site, "validate", "--log-format", "json", str(spec))
    assert checked.returncode == 0, checked.stderr
    records = [json.loads(x) for x in checked.stderr.splitlines() if x.startswith("{")]
    warning = next(r for r in records if r["logger"] == "kpipe.spec")
    assert warning["level"] == "WARNING" and warning["path"] == "delivery"
    assert (warning["file"], warning["line"]) == (str(spec), 2)


def test_a_reader_that_leaves_early_ends_kpipe_quietly():
    """`kpipe plugins | head -1`: the pipe closes under kpipe; no traceback, the shell's 141."""
    import subprocess

    from kit import kpipe_cmd

    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        proc = subprocess.run(kpipe_cmd("plugins"), stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)

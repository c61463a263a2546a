"""`kpipe schema` and `kpipe docs`: the full schema is valid, fits every shipped spec, rejects
what the validator rejects; the docs check notices a stale page."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from kpipe.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted([*ROOT.glob("pipelines/*.yaml"), *ROOT.glob("examples/*.yaml")])


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "kpipe.schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(schema):
    return Draft202012Validator(schema)


def test_schema_is_a_valid_draft_2020_12_schema(schema):
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "files" in schema["properties"]["sink"]["properties"]["type"]["enum"]


def test_schema_goes_to_stdout(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "kpipe pipeline spec"


def test_there_are_specs_to_check():
    assert len(SPECS) >= 5


@pytest.mark.parametrize("path", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_schema_accepts_every_shipped_spec(validator, path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]
    assert errors == []


def _quickstart():
    return yaml.safe_load((ROOT / "pipelines" / "quickstart.yaml").read_text(encoding="utf-8"))


def test_schema_rejects_an_unknown_sink_key(validator):
    spec = _quickstart()
    assert validator.is_valid(spec)
    spec["sink"]["pth"] = "/tmp/out"
    assert any("pth" in e.message for e in validator.iter_errors(spec))


def test_schema_rejects_an_unknown_sink_type(validator):
    spec = _quickstart()
    spec["sink"]["type"] = "nosuchsink"
    assert not validator.is_valid(spec)


def test_schema_rejects_an_unknown_transform(validator):
    spec = _quickstart()
    spec["transforms"] = [{"select": ["id"]}]
    assert validator.is_valid(spec)
    spec["transforms"] = [{"select": ["id"]}, {"nosuchtransform": ["id"]}]
    errors = list(validator.iter_errors(spec))
    assert [list(e.absolute_path) for e in errors] == [["transforms", 1]]


def test_schema_checks_transform_settings(validator):
    spec = _quickstart()
    spec["transforms"] = [{"hash": {"fields": ["customer"], "algo": "md5"}}]
    assert not validator.is_valid(spec)


def test_schema_checks_deserializer_config_and_allows_validate(validator):
    spec = _quickstart()
    spec["deserializer"] = {"type": "json", "validate": "order.schema.json"}
    assert validator.is_valid(spec)
    spec["deserializer"] = {"type": "json", "schema": "x.avsc"}
    assert not validator.is_valid(spec)


def test_interpolated_strings_pass_where_a_number_is_expected(validator):
    spec = _quickstart()
    spec["batch"] = {"max_records": "${MAX_RECORDS:-100}", "max_age": "${AGE}"}
    assert validator.is_valid(spec)
    spec["batch"] = {"max_records": "lots"}
    assert not validator.is_valid(spec)


def test_docs_check_passes_on_the_committed_docs():
    assert main(["docs", "--check", "--dist", "kpipe", "-o", str(ROOT / "docs" / "reference")]) == 0


def test_docs_check_names_a_stale_page(tmp_path, capsys, monkeypatch):
    docs = tmp_path / "reference"
    shutil.copytree(ROOT / "docs" / "reference", docs)
    assert main(["docs", "--check", "--dist", "kpipe", "-o", str(docs)]) == 0

    from kpipe.plugins import registry

    plugin = registry().get("sink", "files")
    changed = copy.deepcopy(dict(plugin.config_schema))
    changed["properties"]["path"]["description"] = "Somewhere else entirely."
    monkeypatch.setitem(registry().plugins["sink"], "files",
                        type(plugin)(**{**vars(plugin), "config_schema": changed}))
    capsys.readouterr()
    assert main(["docs", "--check", "--dist", "kpipe", "-o", str(docs)]) == 1
    err = capsys.readouterr().err
    assert "sinks.md" in err and "spec.md" not in err

    assert main(["docs", "--dist", "kpipe", "-o", str(docs)]) == 0
    assert "Somewhere else entirely." in (docs / "sinks.md").read_text(encoding="utf-8")
    assert main(["docs", "--check", "--dist", "kpipe", "-o", str(docs)]) == 0


def test_docs_check_names_a_missing_page(tmp_path, capsys):
    docs = tmp_path / "reference"
    shutil.copytree(ROOT / "docs" / "reference", docs)
    (docs / "transforms.md").unlink()
    assert main(["docs", "--check", "--dist", "kpipe", "-o", str(docs)]) == 1
    assert "transforms.md" in capsys.readouterr().err


def test_docs_are_deterministic():
    from kpipe.reference import render_docs

    assert render_docs(["kpipe"]) == render_docs(["kpipe"])


def test_editor_support_example_fits_the_schema(validator):
    import re

    text = (ROOT / "docs" / "editor-support.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)
    assert block.startswith("# yaml-language-server: $schema=")
    assert validator.is_valid(yaml.safe_load(block))

"""Every YAML example in docs/errors.md is a spec that validates, and its tests: cases pass
(docs/transforms.md has its own runner, test_docs_transforms.py)."""
from __future__ import annotations

import re

import pytest
import yaml

from kit import ROOT, run_kpipe

DOCS = ["errors.md"]
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def examples():
    for doc in DOCS:
        for i, block in enumerate(_BLOCK.findall((ROOT / "docs" / doc).read_text())):
            yield pytest.param(doc, block, id=f"{doc}#{i + 1}")


@pytest.mark.parametrize("doc,block", list(examples()))
def test_example(doc, block, tmp_path):
    data = yaml.safe_load(block)
    assert isinstance(data, dict) and {"name", "source", "sink"} <= set(data), \
        f"every example in {doc} is a whole spec"
    # Relative paths in the examples are relative to docs/, as they would be for a spec there.
    (tmp_path / "docs").mkdir()
    (tmp_path / "schemas").symlink_to(ROOT / "schemas")
    spec = tmp_path / "docs" / "example.yaml"
    spec.write_text(block)
    proc = run_kpipe("validate", str(spec))
    assert proc.returncode == 0, proc.stderr
    if "tests" in data:
        proc = run_kpipe("test", str(spec))
        assert proc.returncode == 0, proc.stdout + proc.stderr

"""Every example in docs/transforms.md runs, so the page cannot drift from the code.

- each ```yaml block holds a ``transforms:`` list and ``tests:`` cases; the cases must pass;
- each ```python block is a verbatim excerpt of examples/transforms_sample.py;
- each ```toml block declares entry points that load to TransformPlugin descriptors.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import yaml

from kpipe.api import TransformPlugin
from kpipe.plugins import registry
from kpipe.transforms.testing import run_cases

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "transforms.md"
SAMPLE = ROOT / "examples" / "transforms_sample.py"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[int, str]]:
    text = DOC.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1) == lang]


@pytest.fixture(scope="module", autouse=True)
def sample_plugin():
    """examples/ importable, and the doc's plugin example registered as if installed."""
    sys.path.insert(0, str(ROOT))
    plugins = registry().plugins["transform"]
    from examples.transforms_sample import upper_plugin
    plugins["upper"] = upper_plugin
    yield
    del plugins["upper"]
    sys.path.remove(str(ROOT))


def test_the_page_has_examples():
    assert len(blocks("yaml")) >= 15


@pytest.mark.parametrize("line,block", blocks("yaml"), ids=lambda x: f"line{x}" if isinstance(x, int) else "")
def test_yaml_example(line, block):
    data = yaml.safe_load(block)
    assert set(data) == {"transforms", "tests"}, f"docs/transforms.md:{line}: a block needs transforms and tests"
    assert data["tests"], f"docs/transforms.md:{line}: no test cases"
    failures = [f"{r.name}:\n{r.diff()}" for r in run_cases(data["transforms"], data["tests"]) if not r.ok]
    assert not failures, f"docs/transforms.md:{line}:\n" + "\n".join(failures)


@pytest.mark.parametrize("line,block", blocks("python"), ids=lambda x: f"line{x}" if isinstance(x, int) else "")
def test_python_example_is_in_the_sample_module(line, block):
    assert block.strip() in SAMPLE.read_text(), f"docs/transforms.md:{line} is not in {SAMPLE.name}"


@pytest.mark.parametrize("line,block", blocks("toml"), ids=lambda x: f"line{x}" if isinstance(x, int) else "")
def test_toml_entry_points_load(line, block):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    group = tomllib.loads(block)["project"]["entry-points"]["kpipe.transforms"]
    for name, target in group.items():
        module, _, attr = target.partition(":")
        plugin = getattr(importlib.import_module(module), attr)
        assert isinstance(plugin, TransformPlugin) and plugin.name == name

"""The plugin API keeps the promise in docs/api.md: within an API version, nothing public is
removed or changed, and every public name is written down."""
from __future__ import annotations

import re
from pathlib import Path

from api_surface import surface

from kpipe.api import API_VERSION, MIN_API_VERSION, __all__ as API_NAMES

HERE = Path(__file__).parent
SNAPSHOT = HERE / f"api_surface-{API_VERSION}.txt"
DOC = HERE.parent / "docs" / "api.md"


def test_nothing_public_was_removed_or_changed_within_the_api_version():
    promised = SNAPSHOT.read_text().splitlines()
    now = set(surface())
    broken = [line for line in promised if line not in now]
    assert not broken, (
        "these parts of plugin API %d were removed or changed, which breaks plugins written for it; "
        "restore them, or raise kpipe.api.API_VERSION and start tests/api_surface-%d.txt "
        "(docs/api.md):\n  %s" % (API_VERSION, API_VERSION + 1, "\n  ".join(broken)))


def test_every_public_addition_is_recorded():
    promised = set(SNAPSHOT.read_text().splitlines())
    new = [line for line in surface() if line not in promised]
    assert not new, ("new public API, not yet in %s; once it is meant to stay, append it "
                     "(python tests/api_surface.py shows the whole surface):\n  %s"
                     % (SNAPSHOT.name, "\n  ".join(new)))


def test_the_api_doc_names_every_public_name_and_the_versions():
    text = DOC.read_text()
    missing = [name for name in API_NAMES if not re.search(rf"`{name}\b", text)]
    assert not missing, f"docs/api.md does not describe: {missing}"
    assert f"API_VERSION = {API_VERSION}" in text and f"MIN_API_VERSION = {MIN_API_VERSION}" in text

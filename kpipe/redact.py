"""Secrets are never printed: the values to hide, and ``redact(text)``.

What is hidden (docs/metrics.md, "Secrets"):

- the password of any URL, ``scheme://user:PASSWORD@host``, wherever it appears;
- ``password=...``, ``passwd=``, ``pwd=``, ``secret=``, ``token=`` pairs (libpq DSNs, query strings);
- every value registered here, verbatim. ``load_spec`` registers, for each spec it loads
  (``Spec.secrets``): values marked ``"x-secret": true`` in a plugin's config schema (only the
  password of a URL, for keys named ``url``/``*uri`` or values with ``://``), librdkafka options whose name contains ``password`` or
  ``secret``, and every interpolated value that came from ``${file:...}`` or from a variable
  whose name contains PASSWORD, PASSWD, SECRET, TOKEN, CREDENTIAL or API_KEY.

Values shorter than ``MIN_LENGTH`` characters are not hidden verbatim: they would match
inside ordinary words. They are still hidden where they stand as a URL's password.

No optional dependency; safe to import from anywhere.
"""
from __future__ import annotations

import re
import threading
from typing import Iterable
from urllib.parse import urlsplit

__all__ = ["MASK", "MIN_LENGTH", "register", "redact", "secret_name", "url_password", "clear"]

MASK = "***"
MIN_LENGTH = 4

_URL_PASSWORD = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
_PAIR = re.compile(r"(?i)(?P<pre>\b(?:password|passwd|pwd|secret|token)\s*=\s*)(?!\*\*\*)[^\s&;,'\"]+")
_SECRET_NAME = re.compile(r"(?i)PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY")

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern | None = None


def secret_name(name: str) -> bool:
    """Whether a variable or option named ``name`` holds a secret by its name alone."""
    return bool(_SECRET_NAME.search(name))


def url_password(value: str) -> str | None:
    """The password of ``value`` if it is a URL with one, else None."""
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


def register(values: Iterable[str]) -> None:
    """Hide these values in everything ``redact`` sees from now on."""
    global _pattern
    new = {v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH}
    with _lock:
        if new <= _values:
            return
        _values.update(new)
        # Longest first, so a secret that contains another is hidden whole.
        alternatives = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(map(re.escape, alternatives)))


def clear() -> None:
    """Forget every registered value (tests)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def redact(text: str) -> str:
    """``text`` with URL passwords, ``password=`` pairs and registered secrets masked."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m["pre"] + MASK, text)
    if "=" in text:
        text = _PAIR.sub(lambda m: m["pre"] + MASK, text)
    return text

"""Moved to ``kpipe.redact`` (the spec registers secrets with it, and must not import the ops
layer to do so). This name is the same module, kept for existing imports."""
import sys

from kpipe import redact as _redact

sys.modules[__name__] = _redact

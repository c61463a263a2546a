"""The exit codes the operator commands share, and the one rule that maps a failure to one."""
from __future__ import annotations

import sys

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_RUNTIME", "EXIT_UNAVAILABLE", "failures", "report_failure"]

EXIT_OK, EXIT_USAGE, EXIT_RUNTIME, EXIT_UNAVAILABLE = 0, 1, 2, 3


def failures() -> tuple:
    """What a command reports and exits on: kpipe's own errors, and a dependency that never
    answered (not a ``KpipeError``). Imported on use: ``kpipe.runtime`` loads confluent_kafka."""
    from kpipe.api import KpipeError
    from kpipe.runtime.retry import DependencyUnavailable

    return KpipeError, DependencyUnavailable


def report_failure(what: str, exc: BaseException) -> int:
    """Print ``what: exc`` to stderr; 3 when a dependency (Kafka, the sink) did not answer, so a
    scheduler retries later, else 2."""
    from kpipe.runtime.retry import DependencyUnavailable

    print(f"{what}: {exc}", file=sys.stderr)
    return EXIT_UNAVAILABLE if isinstance(exc, DependencyUnavailable) else EXIT_RUNTIME

"""Running kpipe unattended: Prometheus metrics and health endpoints (``metrics``), systemd's
notify protocol (``systemd``), log formats and secret redaction (``logs``, ``redact``).

Everything here watches a ``Runner`` from its own threads through ``Runner.result``
(``kpipe.runtime.stats.RunResult``); nothing here changes what the runner does.
Submodules import their optional dependencies lazily: importing ``kpipe.ops`` costs nothing.
"""

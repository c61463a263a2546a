"""Secrets in specs, without a broker: ``${file:PATH}``, what counts as a secret, and the log
filter and JSON formatter that keep them out of every line."""
from __future__ import annotations

import io
import json
import logging

import pytest

from kit import run_kpipe
from kpipe.ops import redact
from kpipe.ops.logs import JsonFormatter, RedactFilter
from kpipe.spec import SpecError, load_spec

SPEC = """\
name: s
source:
  brokers: b:9092
  topic: t
  options:
    sasl.password: kafka-pass-{n}
sink:
  type: postgres
  url: postgresql+psycopg://app:${{file:{pw}}}@db:5432/w
  table: t
deserializer:
  type: avro
  registry:
    url: https://sr:8081
    username: u
    password: ${{SR_TOKEN}}
"""


@pytest.fixture(autouse=True)
def forget_secrets():
    yield
    redact.clear()


def test_file_reference_reads_the_secret_less_one_newline_and_marks_it_secret(tmp_path):
    (tmp_path / "pg_password").write_text("pg-Secret-1\n\n")  # one newline goes, the other stays
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(SPEC.format(n=1, pw="pg_password"))  # relative to the spec's directory
    spec = load_spec(spec_file, env={"SR_TOKEN": "sr-token-1", "HOME": "/nowhere"})
    assert spec.sink_config["url"] == "postgresql+psycopg://app:pg-Secret-1\n@db:5432/w"
    assert spec.deserializer_config["registry"]["password"] == "sr-token-1"
    # from ${file:}, from a *TOKEN* variable, an x-secret field and a librdkafka *password* option
    assert {"pg-Secret-1\n", "sr-token-1", "kafka-pass-1"} <= spec.secrets
    assert "https://sr:8081" not in spec.secrets and "b:9092" not in spec.secrets
    (tmp_path / "abs").write_text("abs-secret\r\n")
    spec_file.write_text(SPEC.format(n=2, pw=tmp_path / "abs"))
    spec = load_spec(spec_file, env={"SR_TOKEN": "x"})
    assert spec.sink_config["url"] == "postgresql+psycopg://app:abs-secret@db:5432/w"
    assert redact.redact("abs-secret kafka-pass-2 pg-Secret-1") == "*** *** ***"


def test_a_missing_secret_file_is_a_spec_error_at_its_location(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text('name: s\nsource:\n  brokers: b\n  topic: t\nsink:\n  type: files\n  path: "out/${file:nope}"\n')
    proc = run_kpipe("validate", str(spec))
    assert proc.returncode == 1
    assert proc.stderr == f"{spec}:7:14: sink.path: cannot read secret file nope: No such file or directory\n"
    spec.write_text("name: s\nsource:\n  brokers: ${file:/run/x:-b}\n  topic: t\nsink:\n  type: files\n  path: o\n")
    with pytest.raises(SpecError) as err:
        load_spec(spec, env={})
    assert str(err.value).startswith(f"{spec}:3:12: source.brokers: '${{file:/run/x:-b}}': a file reference "
                                     "takes no default")


def test_spec_problems_do_not_print_secrets(tmp_path):
    (tmp_path / "pw").write_text("12345678\n")  # unquoted, it becomes a number: a type error
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nsource:\n  brokers: b\n  topic: t\nsink:\n  type: postgres\n  url: ${file:pw}\n"
                    "  table: t\n")
    with pytest.raises(SpecError) as err:
        load_spec(spec, env={})
    assert "sink.url" in str(err.value) and "12345678" not in str(err.value)


def test_the_log_filter_masks_messages_tracebacks_and_extra_fields():
    redact.register(["hunter22", "ab"])  # too short to hide verbatim: "ab" would match everywhere
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactFilter())
    log = logging.getLogger("kpipe.test_ops_secrets")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("connecting to %s as %s", "postgresql://u:pw1@db/x", "hunter22", extra={"dsn": "password=p1 x"})
        try:
            raise RuntimeError("login with hunter22 failed")
        except RuntimeError:
            log.error("sink failed: about", exc_info=True)
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "connecting to postgresql://u:***@db/x as ***"
    assert first["level"] == "WARNING" and first["logger"] == "kpipe.test_ops_secrets"
    assert first["ts"].endswith("Z") and first["dsn"] == "password=*** x"
    assert "login with *** failed" in second["exc"] and "hunter22" not in stream.getvalue()
    assert second["message"] == "sink failed: about"  # "ab" is not masked inside words



def test_a_url_marked_secret_hides_only_its_password(tmp_path):
    """registry.url is x-secret for the credentials a URL may hold; a bad one is still shown."""
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(SPEC.format(n=3, pw="/dev/null").replace("https://sr:8081", "sr-host:8081"))
    with pytest.raises(SpecError) as err:
        load_spec(spec_file, env={"SR_TOKEN": "sr-token-3"})
    assert "got 'sr-host:8081'" in str(err.value)

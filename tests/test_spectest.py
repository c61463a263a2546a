"""``kpipe test``: inline cases through the real stages, no broker; mismatches print a diff."""
from __future__ import annotations

import json
import textwrap

from kit import run_kpipe

SCHEMA = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}


def write(tmp_path, tests: str):
    (tmp_path / "order.schema.json").write_text(json.dumps(SCHEMA))
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        name: cases
        source: {brokers: "127.0.0.1:1", topic: orders}
        deserializer: {type: json, validate: order.schema.json}
        sink: {type: files, path: ./out}
        tests:
        """) + textwrap.indent(textwrap.dedent(tests), "  "))
    return spec


def test_cases_pass_through_deserializer_validator_and_tombstones(tmp_path):
    spec = write(tmp_path, """\
        - name: decodes raw JSON
          input: {raw: '{"id": 7, "note": "x"}', key: k7, timestamp: 1700000000000}
          expect: {value: {id: 7, note: x}}
        - name: a given value skips the deserializer
          input: {value: {id: 8}}
          expect: {value: {id: 8}}
        - name: invalid JSON is a deserialize error
          input: {raw: '{"id": '}
          expect: {error: {stage: deserialize, message: invalid JSON}}
        - name: the validator names the field
          input: {raw: '{"id": "seven"}'}
          expect: {error: {stage: validate, message: "$.id: 'seven' is not of type 'integer'"}}
        - name: tombstones are dropped
          input: {raw: null}
          expect: {dropped: true}
    """)
    proc = run_kpipe("test", str(spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS") == 5
    assert proc.stdout.rstrip().endswith("5 passed, 0 failed")


def test_a_mismatch_prints_a_diff_and_exits_1(tmp_path):
    spec = write(tmp_path, """\
        - name: wrong expectation
          input: {raw: '{"id": 1, "amount": 5}'}
          expect: {value: {id: 1, amount: 6}}
        - name: expected an error that does not happen
          input: {raw: '{"id": 2}'}
          expect: {error: {stage: validate}}
    """)
    proc = run_kpipe("test", str(spec))
    assert proc.returncode == 1
    out = proc.stdout
    assert "FAIL  wrong expectation" in out and "FAIL  expected an error that does not happen" in out
    assert '-    "amount": 6,' in out and '+    "amount": 5,' in out
    assert out.rstrip().endswith("0 passed, 2 failed")


def test_a_spec_without_cases_is_an_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nsource: {brokers: b, topic: t}\nsink: {type: files, path: ./out}\n")
    proc = run_kpipe("test", str(spec))
    assert proc.returncode == 1 and "no test cases" in proc.stderr


def test_cases_run_the_transforms_in_order(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        name: shaped
        source: {brokers: "127.0.0.1:1", topic: orders}
        transforms:
          - cast: {amount: int}
          - filter: 'amount > 100'
          - set: {where: '_meta.topic'}
        sink: {type: files, path: ./out}
        tests:
          - name: big orders pass, reshaped
            input: {raw: '{"id": 1, "amount": "250"}'}
            expect: {value: {id: 1, amount: 250, where: orders}}
          - name: small orders are filtered
            input: {value: {id: 2, amount: 5}}
            expect: {dropped: true}
          - name: an amount that is not a number is a transform error
            input: {value: {id: 3, amount: lots}}
            expect: {error: {stage: transform, message: amount}}
        """))
    proc = run_kpipe("test", str(spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("3 passed, 0 failed")


def test_cases_compare_strictly_like_run_cases(tmp_path):
    """1, 1.0 and true are three different expectations, in `kpipe test` as in run_cases."""
    spec = write(tmp_path, """\
        - name: true is not 1
          input: {raw: '{"id": 1, "paid": true}'}
          expect: {value: {id: 1, paid: 1}}
        - name: 2.0 is not 2
          input: {raw: '{"id": 2, "amount": 2.0}'}
          expect: {value: {id: 2, amount: 2}}
        - name: the same types pass
          input: {raw: '{"id": 3, "amount": 2.0, "paid": true}'}
          expect: {value: {id: 3, amount: 2.0, paid: true}}
    """)
    proc = run_kpipe("test", str(spec))
    assert proc.returncode == 1
    assert "FAIL  true is not 1" in proc.stdout and "FAIL  2.0 is not 2" in proc.stdout
    assert "PASS  the same types pass" in proc.stdout

"""``kpipe run SPEC --replicas N``: N members of one consumer group, each a child process under
the supervisor, against the real broker. Every test has a group of its own: the bundled broker
(Tansu) can wedge a group when members leave while another joins (``kit.unique``)."""
from __future__ import annotations

import json
import os
import re
import signal

import pytest

from conftest import assert_exactly_once, read_output, write_spec
from kit import (BurstProducer, Proc, event, produce_events, produce_values, run_kpipe, stop_cleanly, unique,
                 wait_for)
from sqlkit import dbs, write_sql_spec  # noqa: F401
from test_supervisor import _free_port_pair, figure, gone, pids, scrape
from kpipe.cli import build_parser
from kpipe.kafka_admin import create_topic
from kpipe.ops.members import from_description
from kpipe.ops.replicas import as_replica, plan


def assignments(proc: Proc, member: str) -> list[str]:
    """What each ``assigned`` line of ``member`` (``NAME/i``) lists, in order."""
    return re.findall(rf"\[{re.escape(member)}\] .*kpipe\.run: assigned (.*)", proc.stderr())


# -- no broker -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "257"])
def test_replicas_must_be_a_count_from_1(value, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "a.yaml", "--replicas", value])
    assert exc.value.code == 1  # usage, not the runtime failure argparse's 2 would say
    assert "--replicas: invalid count" in capsys.readouterr().err


def test_ports_and_client_ids_per_replica(tmp_path):
    from kpipe.spec import load_spec

    spec = load_spec(write_spec(tmp_path, "b:9092", "t", tmp_path / "o", name="orders",
                                options={"group.instance.id": "host-a"}))
    children = plan([spec], 3, 9400)
    assert [c[0] for c in children] == ["orders/0", "orders/1", "orders/2"]
    assert [c[2] for c in children] == [("--metrics-port", str(9400 + i), "--replica", str(i)) for i in range(3)]
    assert [c[2] for c in plan([spec], 2, 0)] == [("--metrics-port", "0", "--replica", str(i)) for i in range(2)]
    assert plan([spec], 1, None) == [("orders", spec.file, ())]  # one replica: the plain pipeline
    member = as_replica(spec, 2)
    # Each member is named apart, and two static members never share one instance id.
    assert member.options["client.id"] == "kpipe-orders-2" and member.options["group.instance.id"] == "host-a-2"
    assert spec.options.get("client.id") is None and member.group == spec.group


def test_members_get_the_options_given_but_never_replicas_of_their_own():
    from kpipe.cli import _child_args

    args = build_parser().parse_args(["run", "a.yaml", "--replicas", "3", "--until-caught-up", "--metrics-port", "9"])
    assert _child_args(args) == ["--no-progress", "--until-caught-up"]  # each its own port, from plan()


def test_lag_names_each_partitions_member_where_the_broker_reports_them():
    from types import SimpleNamespace as NS

    from kpipe.ops.lag import PartitionLag, format_table, to_json, with_members

    def tp(p):
        return NS(topic="t", partition=p)

    desc = NS(state=NS(name="STABLE"), members=[
        NS(member_id="m-a", client_id="kpipe-o-0", host="/10.0.0.1", group_instance_id=None,
           assignment=NS(topic_partitions=[tp(0), tp(1)])),
        NS(member_id="m-b", client_id="kpipe-o-1", host="/10.0.0.2", group_instance_id=None,
           assignment=NS(topic_partitions=[tp(2)]))])
    spec = NS(name="o", group="o", sink_type="files")
    rows = with_members([PartitionLag("t", p, 5, 9, 4, "sink") for p in range(4)], from_description(desc))
    assert [r.member for r in rows] == ["kpipe-o-0@10.0.0.1", "kpipe-o-0@10.0.0.1", "kpipe-o-1@10.0.0.2", None]
    lines = format_table(spec, rows, from_description(desc)).splitlines()
    assert lines[0].endswith("; 2 members)")
    assert lines[1].split() == ["topic", "partition", "committed", "end", "lag", "from", "member"]
    assert lines[2].split()[-1] == "kpipe-o-0@10.0.0.1" and lines[5].split()[-1] == "-"
    doc = json.loads(to_json(spec, rows, from_description(desc)))
    assert doc["members"][1]["partitions"] == [["t", 2]] and doc["partitions"][3]["member"] is None
    # A broker that reports an active group with no members (Tansu): unknown, not "nobody".
    quiet = from_description(NS(state=NS(name="STABLE"), members=[]))
    assert not quiet.known and "names no members" in quiet.note
    rows = with_members(rows, quiet)
    assert "member" not in format_table(spec, rows, quiet).splitlines()[1]
    assert json.loads(to_json(spec, rows, quiet))["members"] is None
    assert from_description(NS(state=NS(name="EMPTY"), members=[])).known  # nobody running


# -- the real broker -------------------------------------------------------------------------


def test_kill_9_of_one_replica_under_load_lands_every_record_once(brokers, topic, tmp_path, dbs):
    """Two members to PostgreSQL while a producer keeps writing; one member is SIGKILLed after it
    has written, the supervisor starts it again, and every record lands exactly once."""
    db = dbs("postgres")
    group, table = db.group("rep"), db.table("rep")
    spec = write_sql_spec(tmp_path, brokers, topic, group=group, max_age="200ms", max_records=500,
                          sink={"type": "postgres", "url": db.url, "table": table, "mode": "insert",
                                "metadata_columns": ["_topic", "_partition", "_offset"]})
    producer = BurstProducer(brokers, topic, 0)
    producer.start()
    sup = Proc(tmp_path / "logs", "sup", "run", str(spec), "--replicas", "2", "--no-progress")
    try:
        wait_for(lambda: assignments(sup, f"{group}/0") and assignments(sup, f"{group}/1"), 30,
                 "both members to be assigned partitions", [sup], interval=0.1)
        victim = f"{group}/1"
        # The victim's partitions have rows: the kill lands after writes, with more on the way.
        owned = {int(p) for p in re.findall(r"\[(\d+)\]", assignments(sup, victim)[-1])}
        wait_for(lambda: all(db.offsets(group).get((topic, p), 0) > 0 for p in owned), 30,
                 f"{victim} to write its partitions {sorted(owned)}", [sup], interval=0.1)
        (pid,) = pids(sup, victim)
        os.kill(pid, signal.SIGKILL)
        before = len(assignments(sup, victim))
        wait_for(lambda: len(pids(sup, victim)) == 2, 30, f"{victim} to be started again", [sup])
        assert "killed by SIGKILL; restart 1/5 in 1s" in sup.stderr()
        assert len(pids(sup, f"{group}/0")) == 1  # the other member ran on
        wait_for(lambda: len(assignments(sup, victim)) > before, 40, f"the new {victim} to join and be assigned",
                 [sup], interval=0.1)
        produced = producer.stop()
        wait_for(lambda: db.count(table) >= produced, 40, f"all {produced} rows", [sup], interval=0.2)
        stop_cleanly(sup, timeout=30)
    finally:
        producer.stop_event.set()
        sup.kill()
    err = sup.stderr()
    assert re.search(rf"{re.escape(group)}/0 \(pid \d+\) finished: exit 0", err), err[-3000:]
    assert re.search(rf"{re.escape(group)}/1 \(pid \d+\) finished: exit 0", err), err[-3000:]
    assert "Traceback" not in err
    # Read back through psycopg itself, not through kpipe or SQLAlchemy's types.
    rows = db.driver_rows(f'SELECT _partition, _offset, id FROM "{table}"')
    assert sorted(r[2] for r in rows) == list(range(produced)), "ids missing or duplicated"
    assert all(p == i % 4 and o == i // 4 for p, o, i in rows)  # each record at its own coordinates
    assert {(topic, p): o for (t, p), o in db.offsets(group).items()} == \
        {(topic, p): len([1 for r in rows if r[0] == p]) for p in range(4)}


def test_each_replica_serves_metrics_on_port_plus_i_and_sigterm_drains_all(brokers, topic, tmp_path):
    name = unique("rep")
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=name, max_age="300ms")
    produce_events(brokers, topic, 400)
    port = _free_port_pair()
    sup = Proc(tmp_path / "logs", "sup", "run", str(spec), "--replicas", "2", "--no-progress",
               "--metrics-port", str(port), "--metrics-host", "127.0.0.1")

    def both() -> tuple | None:
        a, b = scrape(port), scrape(port + 1)
        held = [figure(t, "kpipe_partitions_assigned", name) for t in (a, b)]
        written = [figure(t, "kpipe_messages_written_total", name) for t in (a, b)]
        return (held, written) if held[0] > 0 and held[1] > 0 and sum(written) == 400 else None

    try:
        held, written = wait_for(both, 40, "each member's /metrics on PORT+i, all written", [sup], interval=0.2)
        assert sum(held) == 4  # each port is one member, holding its share of the partitions
        lag = run_kpipe("lag", str(spec), "--json", timeout=60)
        assert lag.returncode == 0, lag.stderr
        report = json.loads(lag.stdout)
        assert report["total"]["committed"] == 400
        if report["members"] is None:  # Tansu names no members: said, not guessed
            assert "names no members" in report["members_note"]
        else:
            assert {m["client_id"] for m in report["members"]} == {f"kpipe-{name}-0", f"kpipe-{name}-1"}
        children = pids(sup, f"{name}/0") + pids(sup, f"{name}/1")
        stop_cleanly(sup, timeout=30)
    finally:
        sup.kill()
    err = sup.stderr()
    for i in (0, 1):
        assert re.search(rf"{re.escape(name)}/{i} \(pid \d+\) finished: exit 0", err), err[-3000:]
        assert re.search(rf"\[{re.escape(name)}/{i}\] .*serving metrics on http://127.0.0.1:{port + i}/", err)
    assert "all pipelines finished (exit codes: " in err and err.rstrip().endswith("; exit 0")
    assert all(gone(pid) for pid in children)
    assert_exactly_once(out, 400)


def test_until_caught_up_with_more_replicas_than_partitions(brokers, tmp_path):
    """Three members on two partitions: a warning names the idle one; every member exits 0 only
    once the whole topic is written, and the supervisor exits 0."""
    topic = unique("rep2")
    create_topic(brokers, topic, 2)
    n = 600
    produce_values(brokers, topic, [(i % 2, str(i), event(i)) for i in range(n)])
    produce_values(brokers, topic, [(p, None, event(n + p)) for p in range(2)])  # see kit.seal
    name = unique("rep")
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=name, max_age="300ms")
    proc = run_kpipe("run", str(spec), "--replicas", "3", "--until-caught-up", "--no-progress", timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{name}: 3 replicas for 2 partitions of {topic}: 1 will stay idle" in proc.stderr
    for i in range(3):
        assert re.search(rf"{re.escape(name)}/{i} \(pid \d+\) finished: exit 0", proc.stderr), proc.stderr[-3000:]
    assert_exactly_once(out, n + 2)


def test_a_failing_member_makes_the_supervisor_exit_with_the_worst_code(brokers, topic, tmp_path):
    """A bad record under errors: fail stops whichever member holds it (exit 2); the supervisor
    exits 2, the worst of the members', with everything before the record written."""
    name = unique("rep")
    out = tmp_path / "out"
    spec = write_spec(tmp_path, brokers, topic, out, name=name, max_age="300ms")
    produce_events(brokers, topic, 400)
    produce_values(brokers, topic, [(1, "bad", b"{not json")])
    produce_values(brokers, topic, [(p, None, event(400 + p)) for p in range(4)])
    proc = run_kpipe("run", str(spec), "--replicas", "2", "--until-caught-up", "--max-restarts", "0",
                     "--no-progress", timeout=90)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "exit codes: " in proc.stderr and proc.stderr.rstrip().endswith("; exit 2")
    ids, _ = read_output(out)
    assert max(ids.values()) == 1
    # Partition 1 is written exactly up to the bad record. The member that gave up stops the
    # others (fail fast), so each other partition holds a prefix of its records, no gaps.
    assert {i for i in ids if i % 4 == 1} == set(range(1, 400, 4))
    for p in (0, 2, 3):
        landed = sorted(i for i in ids if i % 4 == p)
        assert landed == list(range(p, 4 * len(landed), 4)), (p, landed[:10])

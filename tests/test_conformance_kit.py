"""The conformance kit itself: a correct in-memory sink passes every check, and each check fails
for a sink broken in the way it is meant to catch (a check that cannot fail proves nothing)."""
from __future__ import annotations

from contextlib import contextmanager

import pytest

from kpipe.api import (BadRecordError, Capabilities, FatalError, OffsetConflict, RetryableError, Sink, SinkPlugin)
from kpipe.testing import SinkConformance

DESTINATIONS: dict = {}  # name -> {"rows": [(key, value)], "offsets": {tp: next}, "down": bool}


class MemorySink(Sink):
    """Rows and offsets in one dict, updated together; ``bugs`` breaks it on purpose."""

    def __init__(self, config, context):
        super().__init__(config, context)
        self.bugs = set(config.get("bugs", ()))
        self.dest = None
        self.heads: dict = {}   # what this instance believes (the "no-revoke" bug trusts it)
        self.buffer: list = []  # the "buffer-until-close" bug
        self.unsaved: dict = {}  # the "offsets-on-close" bug
        self.closed = False

    def open(self):
        d = DESTINATIONS.setdefault(self.config["name"], {"rows": [], "offsets": {}, "down": False})
        if d["down"]:
            raise RetryableError("memory: down")
        self.dest = d

    def load_offsets(self, partitions):
        if "offsets-leak" in self.bugs:
            return dict(self.dest["offsets"])
        if "no-revoke" in self.bugs:
            return {tp: self.heads.get(tp, self.dest["offsets"].get(tp)) for tp in partitions
                    if tp in self.heads or tp in self.dest["offsets"]}
        return {tp: o for tp, o in self.dest["offsets"].items() if tp in partitions}

    def bad_record(self, batches, partial=False):
        """The BadRecordError for the first value marked bad; ``partial``: in one batch only."""
        seen = 0
        for b in batches:
            for i, v in enumerate(b.values):
                if isinstance(v, dict) and v.get("bad"):
                    index = i
                    if "part-index" in self.bugs:  # into the run of upserts after the last delete
                        index = i - max((j + 1 for j in range(i) if b.values[j] is None), default=0)
                    elif "call-index" in self.bugs:  # into every record of the call
                        index = seen + i
                    return BadRecordError("memory: bad record", index, b.topic, b.partition, b.offset_of(i))
            seen += len(b)
            if partial:
                return None
        return None

    def write(self, batches):
        d = self.dest
        if d["down"]:
            if "partial-retry" in self.bugs and batches and batches[0].values:
                d["rows"].append((None, batches[0].values[0]))
            if "fatal-outage" in self.bugs:
                raise FatalError("memory: down")
            raise RetryableError("memory: down")
        bad = None if "partial-bad" in self.bugs else self.bad_record(batches)
        if bad is not None:
            raise bad  # before anything is applied
        conflicts = {}
        for b in batches:
            tp = (b.topic, b.partition)
            head = self.heads.get(tp) if "no-revoke" in self.bugs and tp in self.heads else d["offsets"].get(tp)
            if "no-fence" not in self.bugs and head is not None and b.start_offset != head:
                conflicts[tp] = head
                continue
            nxt = b.next_offset
            if "last-record-offset" in self.bugs:
                nxt = b.offsets[-1] + 1 if b.values else b.start_offset
            if not b.values and "empty-wipes" in self.bugs:  # DELETE without WHERE
                d["rows"] = []
            if not b.values and "empty-keeps-offset" in self.bugs:
                continue
            deletes = self.context.tombstones == "delete"
            if deletes and b.values and all(v is None for v in b.values) and "all-tombstones-wipe" in self.bugs:
                d["rows"] = []
            if "partial-bad" in self.bugs and self.bad_record([b], partial=True) is not None:
                good = b.head(b.values.index(next(v for v in b.values if isinstance(v, dict) and v.get("bad"))))
                d["rows"] += [(k, v) for k, v in zip(good.keys, good.values) if v is not None]
                raise self.bad_record([b], partial=True)
            for key, v in zip(b.keys, b.values):
                if v is None and self.context.tombstones == "delete" and "deletes-noop" not in self.bugs:
                    d["rows"] = [(k, r) for k, r in d["rows"] if r["id"].encode() != key]
                elif v is not None:
                    (self.buffer if "buffer-until-close" in self.bugs else d["rows"]).append((key, v))
            (self.unsaved if "offsets-on-close" in self.bugs else d["offsets"])[tp] = nxt
            self.heads[tp] = nxt
        if conflicts:
            raise OffsetConflict(conflicts)

    def alter_offsets(self, group, positions, expected):
        offsets = self.dest["offsets"]
        stale = {tp: offsets.get(tp, -1) for tp in positions if offsets.get(tp) != expected.get(tp)}
        if stale and "alter-unfenced" not in self.bugs:
            raise OffsetConflict(stale)
        offsets.update(positions)

    def revoke(self, partitions):
        if "no-revoke" not in self.bugs:
            for tp in partitions:
                self.heads.pop(tp, None)

    def close(self):
        if self.closed and "close-twice" in self.bugs:
            raise RuntimeError("memory: closed twice")
        self.closed = True
        if self.dest is not None:
            self.dest["rows"] += self.buffer
            self.dest["offsets"].update(self.unsaved)
        self.buffer = []
        self.unsaved = {}


memory_plugin = SinkPlugin(name="memory", config_schema={"type": "object"}, factory=MemorySink,
                           capabilities=Capabilities(stores_offsets=True, idempotent_writes=True, deletes=True,
                                                     alter_offsets=True))


class TestMemorySink(SinkConformance):
    plugin = memory_plugin
    bugs: tuple = ()

    def config(self, tmp_path):
        return {"name": str(tmp_path / "dest"), "bugs": list(self.bugs)}

    def deletes_config(self, tmp_path):
        return self.config(tmp_path / "deletes")

    def bad_value(self, topic, partition, offset):
        return {"id": f"{topic}/{partition}/{offset}", "bad": True}

    def read_back(self, config):
        return [v for _, v in DESTINATIONS.get(config["name"], {"rows": []})["rows"]]

    @contextmanager
    def destination_down(self, config):
        DESTINATIONS[config["name"]]["down"] = True
        try:
            yield
        finally:
            DESTINATIONS[config["name"]]["down"] = False


CHECKS = sorted(name for name in dir(SinkConformance) if name.startswith("test_"))
CAUGHT_BY = {
    "test_open_and_close_are_idempotent": "close-twice",
    "test_an_empty_batch_is_harmless": "last-record-offset",
    "test_the_same_batch_twice_leaves_one_copy": "no-fence",
    "test_a_crash_between_write_and_commit_loses_and_duplicates_nothing": "buffer-until-close",
    "test_a_retryable_error_commits_nothing": "partial-retry",
    "test_a_revoke_drops_the_partitions_state": "no-revoke",
    "test_stores_offsets_keeps_each_partitions_next_offset": "offsets-leak",
    "test_stores_offsets_fences_a_stale_writer": "no-fence",
    "test_idempotent_writes_replay_leaves_one_copy": "no-fence",
    "test_deletes_a_tombstone_removes_its_key": "deletes-noop",
    "test_an_empty_write_after_data_keeps_it": "empty-wipes",
    "test_an_all_filtered_batch_before_data_in_one_call_is_harmless": "empty-keeps-offset",
    "test_an_all_skipped_tombstones_batch_moves_the_offset": "empty-keeps-offset",
    "test_an_all_dead_lettered_batch_moves_the_offset": "last-record-offset",
    "test_deletes_an_all_tombstone_batch_deletes_exactly_its_keys": "all-tombstones-wipe",
    "test_a_bad_record_is_reported_at_its_index_and_the_rest_lands": "part-index",
    "test_a_second_run_after_a_crash_lands_each_record_once": "offsets-on-close",
    "test_alter_offsets_moves_where_a_fresh_sink_resumes": "alter-unfenced",
}


def test_every_check_has_a_bug_it_catches():
    assert sorted(CAUGHT_BY) == CHECKS


@pytest.mark.parametrize("check,bug", sorted(CAUGHT_BY.items()) + [
    ("test_a_retryable_error_commits_nothing", "fatal-outage"),
    ("test_a_crash_between_write_and_commit_loses_and_duplicates_nothing", "no-fence"),
    ("test_an_empty_write_after_data_keeps_it", "empty-keeps-offset"),
    ("test_an_all_filtered_batch_before_data_in_one_call_is_harmless", "empty-wipes"),
    ("test_an_all_skipped_tombstones_batch_moves_the_offset", "empty-wipes"),
    ("test_an_all_dead_lettered_batch_moves_the_offset", "empty-wipes"),
    ("test_a_bad_record_is_reported_at_its_index_and_the_rest_lands", "call-index"),
    ("test_a_bad_record_is_reported_at_its_index_and_the_rest_lands", "partial-bad"),
    ("test_alter_offsets_moves_where_a_fresh_sink_resumes", "offsets-on-close"),
])
def test_each_check_fails_for_its_broken_sink(tmp_path, check, bug):
    broken = type("Broken", (TestMemorySink,), {"bugs": (bug,)})()
    # A check's own assertion, or pytest.raises' Failed; the broken close raises RuntimeError.
    # A skip is neither, and neither is an error of the kit itself (TypeError, KeyError, ...).
    with pytest.raises((AssertionError, pytest.fail.Exception, RuntimeError)) as info:
        getattr(broken, check)(tmp_path)
    assert bug == "close-twice" or not isinstance(info.value, RuntimeError), info.value

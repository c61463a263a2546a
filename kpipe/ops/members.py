"""Who holds which partition: the members of a consumer group as its coordinator reports them
(DescribeGroups), for ``kpipe lag``. Replicas of one spec have client ids ``kpipe-NAME-0``,
``kpipe-NAME-1``, ... (``kpipe.ops.replicas``), so each partition names its process.

Brokers differ in what they report. Apache Kafka and Redpanda give each member's id, client
id, host and assigned partitions. Some report an active group with no members (the bundled
Tansu does); then ``Members.known`` is False and the note says why, and nothing is guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Member", "Members", "read_members", "from_description"]

_GONE = ("EMPTY", "DEAD")  # states in which a group has no members by definition


@dataclass
class Member:
    member_id: str
    client_id: str
    host: str
    group_instance_id: str | None
    partitions: list = field(default_factory=list)  # [(topic, partition)]

    @property
    def label(self) -> str:
        """``client@host``: what an operator recognises (a member id changes at every join)."""
        host = (self.host or "").lstrip("/")
        return f"{self.client_id}@{host}" if host else self.client_id


@dataclass
class Members:
    state: str | None             # the group's state as the broker names it; None: not described
    members: list                 # [Member]; empty when none, or when not known
    known: bool                   # False: the broker did not say who the members are
    note: str = ""                # why not, when not known

    def owners(self) -> dict:
        """``{(topic, partition): Member}`` for every assigned partition."""
        return {tp: m for m in self.members for tp in m.partitions}


def from_description(desc) -> Members:
    """``Members`` from a ``ConsumerGroupDescription`` (or anything shaped like one)."""
    state = str(getattr(desc.state, "name", desc.state)).upper()
    members = []
    for m in desc.members or ():
        assignment = getattr(m, "assignment", None)
        tps = getattr(assignment, "topic_partitions", None) or ()
        members.append(Member(m.member_id, m.client_id, m.host, getattr(m, "group_instance_id", None),
                              sorted((tp.topic, tp.partition) for tp in tps)))
    if not members and state not in _GONE:
        return Members(state, [], False, f"the broker reports the group {state.lower()} but names no members")
    return Members(state, members, True)


def read_members(spec, timeout: float = 5.0) -> Members:
    """The spec's group as its coordinator describes it. Never raises: a broker that cannot
    describe the group leaves the members unknown, with the reason in the note."""
    from kpipe.kafka_admin import describe

    try:
        return from_description(describe(spec.brokers, spec.group, spec.options, timeout))
    except Exception as exc:  # the lag report stands without it
        return Members(None, [], False, f"describing the group failed: {exc}")

"""A record-form python transform for examples/dlq-replay.yaml: keep, in the record, the stage
that dead-lettered it (the kpipe.error.stage header)."""


def keep_reason(value, meta):
    stage = meta.headers.get("kpipe.error.stage")
    return {**value, "replayed_from": stage.decode() if stage else None}

"""`kpipe run` with several specs hands each child the options it was given, and only those."""
from __future__ import annotations

from kpipe.cli import _child_args, build_parser


def test_a_child_gets_the_options_given_and_not_the_supervisors():
    args = build_parser().parse_args(["run", "a.yaml", "b.yaml", "-vv", "--until-caught-up", "--max-messages", "5",
                                      "--restart", "no", "--log-format", "json", "--health-stall", "7"])
    assert _child_args(args) == ["--no-progress", "--verbose", "--verbose", "--log-format", "json",
                                 "--until-caught-up", "--max-messages", "5", "--health-stall", "7.0"]


def test_defaults_are_not_repeated():
    args = build_parser().parse_args(["run", "a.yaml", "b.yaml"])
    assert _child_args(args) == ["--no-progress"]

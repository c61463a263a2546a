"""The ``kpipe`` command line.

Exit codes (documented in the README; cron, systemd and Kubernetes rely on them):
  0  done: caught up, --max-messages reached, or stopped by SIGINT/SIGTERM after draining
  1  invalid spec or usage
  2  runtime failure (a bad record, a fatal Kafka or sink error)
  3  a dependency (Kafka, the sink) stayed unreachable after retries
Several pipelines under one supervisor exit with the worst of theirs: 2 > 3 > 1 > 0
(docs/operations.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

__all__ = ["main", "EXIT_OK", "EXIT_USAGE", "EXIT_RUNTIME", "EXIT_UNAVAILABLE"]

from kpipe.ops.exits import EXIT_OK, EXIT_RUNTIME, EXIT_UNAVAILABLE, EXIT_USAGE  # one definition for every command


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 by default; 2 means runtime failure here
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _setup_logging(verbosity: int, fmt: str = "text") -> None:
    from kpipe.ops.logs import setup_logging  # text or JSON lines; secrets redacted either way

    setup_logging(verbosity, fmt)


def _load(paths):
    """Load every spec; print all problems of all files. Returns specs, or None if any is invalid."""
    from kpipe.spec import SpecError, load_spec

    specs, ok = [], True
    for path in paths:
        # `python:` transforms may name a module that sits next to the spec. Appended, so an
        # installed package of the same name still wins.
        here = os.path.dirname(os.path.abspath(path))
        if here not in sys.path:
            sys.path.append(here)
        try:
            spec = load_spec(path)
            specs.append(spec)
            for w in spec.warnings:  # through logging, so --log-format json keeps one format
                logging.getLogger("kpipe.spec").warning(
                    "%s:%d:%d: %s: %s", w.file, w.line, w.col, w.path, w.message,
                    extra={"file": w.file, "line": w.line, "col": w.col, "path": w.path})
        except SpecError as err:
            print(err, file=sys.stderr)
            ok = False
        except OSError as exc:
            print(f"{path}: {exc.strerror}", file=sys.stderr)
            ok = False
    return specs if ok else None


def cmd_validate(args) -> int:
    specs = _load(args.specs)
    if specs is None:
        return EXIT_USAGE
    for spec in specs:
        print(f"{spec.file}: ok ({spec.name}: {', '.join(spec.topics)} -> {spec.sink_type})")
    return EXIT_OK


def cmd_run(args) -> int:
    from kpipe.ops.supervisor import expand_specs

    paths = expand_specs(args.specs)
    specs = None if paths is None else _load(paths)
    if specs is None:
        return EXIT_USAGE
    if len(specs) > 1 or (args.replicas > 1 and args.replica is None):  # a member never supervises
        return _supervise(args, specs)
    from kpipe.ops.progress import attach
    from kpipe.runtime import Runner

    from kpipe.api import KpipeError

    spec = specs[0]
    if args.replica is not None:  # one member of `--replicas N`, started by the supervisor
        from kpipe.ops.replicas import as_replica

        spec = as_replica(spec, args.replica)
    try:
        runner = Runner(spec, until_caught_up=args.until_caught_up, max_messages=args.max_messages)
    except KpipeError as exc:  # a plugin the spec names cannot start (say, an unreadable schema file)
        print(f"{spec.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from kpipe.ops.run import run_ops  # metrics and health endpoint, systemd notify

    with run_ops(args, runner) as health:
        detach = attach(runner, spec.name, args.until_caught_up, args.progress, args.progress_interval,
                        health=health)
        try:
            result = runner.run()
        finally:
            detach()
    log = logging.getLogger("kpipe")
    extra = "".join(f"; {what} {n}" for what, n in (("filtered", result.dropped), ("skipped", result.skipped),
                                                     ("dead-lettered", result.dead_lettered)) if n)
    log.info("%s: consumed %d, wrote %d records in %d batches%s%s", spec.name, result.consumed,
             result.written, result.batches, extra, f"; failed: {result.reason}" if result.exit_code else "")
    if runner.abandoned:
        # A sink call is stuck in a socket read and was given up (nothing committed for it).
        # Its thread, or a pool thread of the sink's own, would hold the interpreter's exit
        # (it joins non-daemon threads) until the driver's timeout, if ever: end now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(result.exit_code)
    return result.exit_code


# `kpipe run` options that only the supervisor acts on; every other option is passed to each child.
_SUPERVISOR_ONLY = {"specs", "restart", "max_restarts", "progress", "progress_interval", "help", "version",
                    "metrics_port", "replicas", "replica"}


def _child_args(args) -> list[str]:
    """The options of this `kpipe run` as they were given, for each child's command line."""
    out: list[str] = ["--no-progress"]
    for action in args.run_options:
        if not action.option_strings or action.dest in _SUPERVISOR_ONLY:
            continue
        value = getattr(args, action.dest, None)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0 and type(value) is int:  # a counter: -vv
            out += [flag] * value
        elif action.nargs == 0:  # store_true / store_false / store_const
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def _supervise(args, specs) -> int:
    from kpipe.ops.progress import make_display
    from kpipe.ops.supervisor import Supervisor

    names: dict = {}
    for spec in specs:
        if spec.name in names:
            print(f"{spec.file}: pipeline name {spec.name!r} is also the name of {names[spec.name]}; "
                  "each pipeline under one supervisor needs a name of its own", file=sys.stderr)
            return EXIT_USAGE
        names[spec.name] = spec.file
    from kpipe.ops.replicas import plan, warn_idle

    # Each child its own metrics port, PORT+k; replicas of one spec each their own client.id.
    children = plan(specs, args.replicas, args.metrics_port)
    if args.metrics_port and args.metrics_port + len(children) - 1 > 65535:
        print(f"kpipe run: --metrics-port {args.metrics_port}: {len(children)} processes need ports up to "
              f"{args.metrics_port + len(children) - 1}, past 65535", file=sys.stderr)
        return EXIT_USAGE
    display = make_display(sys.stderr, args.progress_interval) if args.progress else None
    if args.replicas > 1:
        warn_idle(specs, args.replicas)
    sup = Supervisor(children, _child_args(args), restart=args.restart,
                     max_restarts=args.max_restarts, bounded=bool(args.until_caught_up or args.max_messages),
                     display=display)
    from kpipe.ops.progress import route_logs, unroute_logs

    swapped = route_logs(display, sys.stderr)
    try:
        return sup.run()
    finally:
        unroute_logs(swapped, sys.stderr)


def cmd_lag(args) -> int:
    specs = _load([args.spec])
    if specs is None:
        return EXIT_USAGE
    from kpipe.ops.lag import format_table, gather, to_json, with_members
    from kpipe.ops.members import read_members
    from kpipe.ops.exits import failures, report_failure

    spec = specs[0]
    try:
        rows = gather(spec)
    except failures() as exc:
        return report_failure(f"kpipe lag: {spec.file}", exc)
    members = read_members(spec)  # who holds each partition, where the broker says
    with_members(rows, members)
    print(to_json(spec, rows, members) if args.json else format_table(spec, rows, members))
    return EXIT_OK


def cmd_offsets(args) -> int:
    specs = _load([args.spec])
    if specs is None:
        return EXIT_USAGE
    from kpipe.ops.offsets_cmd import cmd_offsets as run

    return run(args, specs[0])


def cmd_check(args) -> int:
    specs = _load([args.spec])
    if specs is None:
        return EXIT_USAGE
    from kpipe.ops.check import check

    return check(specs[0])


def cmd_test(args) -> int:
    specs = _load(args.specs)
    if specs is None:
        return EXIT_USAGE
    from kpipe.spectest import format_report, run_spec_tests

    failed = 0
    for spec in specs:
        if not spec.tests:
            print(f"{spec.file}: no test cases (add a 'tests:' list)", file=sys.stderr)
            failed += 1
            continue
        results = run_spec_tests(spec)
        print(format_report(spec, results))
        failed += sum(1 for r in results if not r.ok)
    return EXIT_USAGE if failed else EXIT_OK


def cmd_demo(args) -> int:
    from kpipe.demo import demo

    return demo(messages=args.messages, keep=args.keep)


def cmd_plugins(args) -> int:
    from kpipe.plugins import capability_flags, registry

    reg = registry()
    rows = []
    for kind in sorted(reg.plugins):
        for name in reg.names(kind):
            dist, version = reg.dists[(kind, name)]
            flags = capability_flags(getattr(reg.plugins[kind][name], "capabilities", None))
            rows.append({"kind": kind, "name": name, "distribution": dist, "version": version,
                         "capabilities": flags, "error": None})
        for name, why in sorted(reg.broken[kind].items()):
            rows.append({"kind": kind, "name": name, "distribution": None, "version": None,
                         "capabilities": [], "error": why})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if r["error"]:
                print(f"{r['kind']:13} {r['name']:16} BROKEN: {r['error']}")
            else:
                print(f"{r['kind']:13} {r['name']:16} {r['distribution']} {r['version']}  {','.join(r['capabilities'])}")
    for (kind, name), owners in sorted(reg.conflicts.items()):
        # A plugin that fails to import is a warning; two owners of one name is an error,
        # because which one a spec would get depends on installation order.
        print(f"error: {kind} plugin name {name!r} is claimed by {' and '.join(owners)}", file=sys.stderr)
    return EXIT_USAGE if reg.conflicts else EXIT_OK


def _write(path: str, text: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def cmd_schema(args) -> int:
    from kpipe.reference import schema_json

    text = schema_json(args.dist)
    if args.output and args.output != "-":
        _write(args.output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_docs(args) -> int:
    from kpipe.reference import render_docs

    pages = render_docs(args.dist)
    if args.check:
        stale = []
        for name, text in pages.items():
            path = os.path.join(args.output, name)
            try:
                with open(path, encoding="utf-8", newline="") as fh:
                    current = fh.read()
            except OSError:
                current = None
            if current != text:
                stale.append(path)
        for path in stale:
            print(f"{path}: stale; run: kpipe docs -o {args.output}", file=sys.stderr)
        return EXIT_USAGE if stale else EXIT_OK
    for name, text in pages.items():
        _write(os.path.join(args.output, name), text)
        print(os.path.join(args.output, name))
    return EXIT_OK


MAX_REPLICAS = 256  # processes on one machine; a typo must not fork thousands


def _replica_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number from 1 to {MAX_REPLICAS}")
    return n


def _add_ops_run_options(r) -> None:
    """`kpipe run` options for progress and for the supervisor of many pipelines."""
    r.add_argument("--replicas", type=_replica_count, default=1, metavar="N",
                   help="run N members of each spec's consumer group, each its own process under the "
                        "supervisor (useful up to the topics' partition count); see docs/operations.md")
    r.add_argument("--replica", type=int, help=argparse.SUPPRESS)  # set by the supervisor on each member
    r.add_argument("--restart", choices=["no", "on-failure", "always"], default="on-failure",
                   help="several specs or replicas: restart a pipeline whose process dies (default: on-failure)")
    r.add_argument("--max-restarts", type=int, default=5, metavar="N",
                   help="several specs or replicas: give a pipeline up after N restarts in a row (default: 5)")
    r.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress display (a live line per pipeline on a terminal, else a log line "
                        "every --progress-interval)")
    r.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                   help="off a terminal: seconds between progress log lines (default: 10)")


class _Options:
    """``add_argument`` that keeps the actions it returns: `kpipe run` hands the options it was
    given to each child process, and argparse keeps its own list of them private."""

    def __init__(self, parser, kept: list | None = None):
        self.parser = parser
        self.kept: list = [] if kept is None else kept

    def add_argument(self, *args, **kw):
        action = self.parser.add_argument(*args, **kw)
        self.kept.append(action)
        return action


def _add_offsets(sub, verbosity) -> None:
    o = sub.add_parser("offsets", parents=[verbosity], help="see and move a pipeline's position (replay, skip)",
                       description="A pipeline's position lives in its sink (kpipe_offsets, the files' names, "
                                   "the S3 state objects), which the runner seeks to; the group's offset only "
                                   "mirrors it. These commands read and move both. Exit codes as kpipe lag; a "
                                   "refused reset exits 1.")
    osub = o.add_subparsers(dest="offsets_command", metavar="ACTION", parser_class=_Parser)
    osub.required = True
    show = osub.add_parser("show", parents=[verbosity], help="per partition: sink, group, log start and end, lag, "
                                                              "where the next run starts and why")
    show.add_argument("spec", metavar="SPEC", help="pipeline spec file")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    export = osub.add_parser("export", parents=[verbosity],
                             help="topic,partition,offset lines of where the next run starts (for reset --from-file)")
    export.add_argument("spec", metavar="SPEC", help="pipeline spec file")
    reset = osub.add_parser("reset", parents=[verbosity], help="move the position: a dry run unless --execute",
                            description="Plan new positions (current -> new per partition) and, with --execute, "
                                        "write them into the sink's store (fenced like a write), then commit them "
                                        "to the group. Offsets outside the log are clamped to its start or end. "
                                        "Refused while the group has active members.")
    reset.add_argument("spec", metavar="SPEC", help="pipeline spec file")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the log start of each partition")
    to.add_argument("--to-latest", action="store_true", help="the log end: skip everything not read yet")
    to.add_argument("--to-offset", type=int, metavar="N", help="offset N in each partition")
    to.add_argument("--to-datetime", metavar="TIME",
                    help="the first offset at or after TIME (ISO 8601, e.g. 2026-11-26T10:00:00Z; no zone: UTC)")
    to.add_argument("--shift-by", type=int, metavar="N", help="N from where the next run would start (negative: back)")
    to.add_argument("--from-file", metavar="FILE.csv", help="topic,partition,offset lines, as export writes them")
    reset.add_argument("--topic", action="append", metavar="T[:P,P]",
                       help="only this topic, or these partitions of it (repeatable); default: all")
    reset.add_argument("--execute", action="store_true", help="apply the plan (default: print it, change nothing)")
    reset.add_argument("--json", action="store_true", help="print the plan as JSON")
    for p in (show, export, reset):
        p.set_defaults(func=cmd_offsets)


def build_parser() -> argparse.ArgumentParser:
    from kpipe import __version__

    p = _Parser(prog="kpipe", description="Declarative, exactly-once Kafka sink pipelines.",
                epilog="exit codes: 0 ok, 1 invalid spec or usage, 2 runtime failure, "
                       "3 dependency unreachable after retries")
    p.add_argument("--version", action="version", version=f"kpipe {__version__}")
    verbosity = argparse.ArgumentParser(add_help=False)
    common = _Options(verbosity)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    common.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("KPIPE_LOG_FORMAT", "text"),
                        help="text (default, or $KPIPE_LOG_FORMAT) or json: one object per line, for journald/ELK")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    v = sub.add_parser("validate", parents=[verbosity], help="check specs without connecting to anything",
                       description="Check specs without connecting to anything. Prints every problem "
                                   "as FILE:LINE:COL: PATH: MESSAGE and exits 1 if there is any.")
    v.add_argument("specs", nargs="+", metavar="SPEC", help="pipeline spec file(s)")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run", parents=[verbosity], help="run one pipeline, or many under a supervisor",
                       description="Run a pipeline until SIGINT/SIGTERM (then drain, commit and exit 0), "
                                   "or until caught up, or for N messages. With several specs (or a "
                                   "directory: every *.yaml in it), each runs in a child process under "
                                   "one supervisor; see docs/operations.md.")
    ro = _Options(r, list(common.kept))  # the parents' actions are the run parser's too
    ro.add_argument("specs", nargs="+", metavar="SPEC", help="pipeline spec file(s), or a directory of them")
    ro.add_argument("--until-caught-up", action="store_true",
                    help="record the end offsets at start, exit 0 once all of them are written and committed")
    ro.add_argument("--max-messages", type=int, metavar="N", help="stop after consuming N messages")
    # -- operations (kpipe/ops, docs/metrics.md) --
    ro.add_argument("--metrics-port", type=int, metavar="PORT",
                    help="serve Prometheus /metrics, /healthz and /readyz on PORT (0: any free port); "
                         "with several specs or --replicas, process i gets PORT+i")
    ro.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST", help="address to bind (default 0.0.0.0)")
    ro.add_argument("--health-stall", type=float, metavar="SECONDS",
                    help="/healthz fails and systemd watchdog pings stop once the loop has not turned for this "
                         "long (default: 60 s plus the spec's whole retry budget)")
    _add_ops_run_options(ro)
    r.set_defaults(func=cmd_run, run_options=ro.kept)

    t = sub.add_parser("test", parents=[verbosity], help="run a spec's test cases, without a broker",
                       description="Run each case in the spec's 'tests:' list through its deserializer "
                                   "(for 'raw' input), validator and transforms, and compare with the "
                                   "expected value, drop or error. Exits 1 if a case fails.")
    t.add_argument("specs", nargs="+", metavar="SPEC", help="pipeline spec file(s)")
    t.set_defaults(func=cmd_test)

    d = sub.add_parser("demo", parents=[verbosity], help="run the quickstart on a bundled broker",
                       description="Start the bundled broker, produce sample orders, run "
                                   "pipelines/quickstart.yaml into local files, show what landed, clean up.")
    d.add_argument("--messages", type=int, default=1000, metavar="N", help="sample events to produce")
    d.add_argument("--keep", metavar="DIR", help="keep the output in DIR instead of a temp directory")
    d.set_defaults(func=cmd_demo)

    lg = sub.add_parser("lag", parents=[verbosity], help="committed position, end offset and lag per partition",
                        description="For each partition of the spec's source topics: the committed position "
                                    "(from the sink's own offset store when it has one, else the group's), "
                                    "the end offset and the lag, with totals. Exits 3 if Kafka or the sink "
                                    "is unreachable.")
    lg.add_argument("spec", metavar="SPEC", help="pipeline spec file")
    lg.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lg.set_defaults(func=cmd_lag)

    _add_offsets(sub, verbosity)

    ck = sub.add_parser("check", parents=[verbosity], help="validate a spec, then connect to its dependencies",
                        description="Validate the spec, then check that the brokers answer, the topics "
                                    "exist, the sink opens and reads its offsets, and the dead-letter topic "
                                    "exists. One line per check; exit 1 invalid spec, 2 a check failed "
                                    "(missing topic, access denied), 3 a dependency is unreachable.")
    ck.add_argument("spec", metavar="SPEC", help="pipeline spec file")
    ck.set_defaults(func=cmd_check)

    pl = sub.add_parser("plugins", parents=[verbosity], help="list installed plugins (sinks, deserializers, transforms)",
                        description="List every installed plugin: kind, name, distribution, version and "
                                    "declared capabilities. A plugin that fails to load is listed as "
                                    "BROKEN (a warning); a name claimed by two distributions is an "
                                    "error (exit 1).")
    pl.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    pl.set_defaults(func=cmd_plugins)

    dist_help = ("only plugins from distribution NAME (repeatable; default: every installed plugin). "
                 "The committed docs use --dist kpipe")
    sc = sub.add_parser("schema", parents=[verbosity], help="print the JSON Schema of a whole spec, plugins included",
                        description="Print the complete JSON Schema (draft 2020-12) of a pipeline spec: the "
                                    "envelope plus the config schema of every installed sink, deserializer and "
                                    "transform, for editors (yaml-language-server, VS Code; see "
                                    "docs/editor-support.md). A ${VAR} string is accepted wherever a number, "
                                    "boolean, choice or pattern is expected.")
    sc.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    sc.add_argument("--dist", action="append", metavar="NAME", help=dist_help)
    sc.set_defaults(func=cmd_schema)

    dc = sub.add_parser("docs", parents=[verbosity], help="render the reference docs from the schemas",
                        description="Render Markdown reference docs from the schemas the validator uses: "
                                    "spec.md (the envelope), sinks.md, deserializers.md and transforms.md "
                                    "(every installed plugin's options). With --check, write nothing and "
                                    "exit 1 naming each file that differs from what would be rendered.")
    dc.add_argument("-o", "--output", metavar="DIR", default=os.path.join("docs", "reference"),
                    help="directory of the pages (default: docs/reference)")
    dc.add_argument("--check", action="store_true", help="exit 1 if the pages in DIR are stale")
    dc.add_argument("--dist", action="append", metavar="NAME", help=dist_help)
    dc.set_defaults(func=cmd_docs)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(-1 if args.quiet else args.verbose, args.log_format)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # `kpipe plugins | head`: the reader left; exit quietly, as Unix tools do (the Python
        # docs' recipe: point stdout at devnull so the interpreter's final flush cannot fail).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it

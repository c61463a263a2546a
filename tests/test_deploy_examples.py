"""The systemd units and Kubernetes manifests in examples/: no cluster here, so check that they
parse, have the expected kinds and settings, name real ``kpipe`` commands and flags (parsed
by kpipe's own argparse parser), and that the specs in the ConfigMap validate."""
from __future__ import annotations

import configparser
import re
import shlex

import pytest
import yaml

from kit import ROOT, run_kpipe
from kpipe.cli import build_parser

K8S = ROOT / "examples" / "kubernetes"
SYSTEMD = ROOT / "examples" / "systemd"

def parse_cli(argv: list[str]):
    """``argv`` through kpipe's parser; fails the test on any unknown flag or bad value."""
    try:
        return build_parser().parse_args(list(argv))
    except SystemExit as exc:
        pytest.fail(f"kpipe {' '.join(argv)}: not accepted by kpipe's parser (exit {exc.code})")


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def test_manifests_are_yaml_of_the_expected_kinds():
    docs = manifests()
    assert set(docs) == {"ConfigMap", "Deployment", "CronJob"}
    for doc in docs.values():
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_containers_run_real_kpipe_commands_on_specs_from_the_configmap():
    docs = manifests()
    cm = docs["ConfigMap"]
    for kind in ("Deployment", "CronJob"):
        spec = pod_spec(docs[kind])
        (container,) = spec["containers"]
        args = parse_cli(container["args"])
        assert args.command == "run"
        mount = next(m for m in container["volumeMounts"] if m["name"] == "specs")
        volume = next(v for v in spec["volumes"] if v["name"] == "specs")
        assert volume["configMap"]["name"] == cm["metadata"]["name"]
        for path in args.specs:
            assert path.startswith(mount["mountPath"] + "/")
            assert path[len(mount["mountPath"]) + 1:] in cm["data"], path
        env = {e["name"] for e in container["env"]}
        assert {"KAFKA_BROKERS", "PGPASSWORD"} <= env


def test_deployment_scales_out_in_one_group_with_probes_on_the_metrics_port():
    dep = manifests()["Deployment"]
    assert dep["spec"]["replicas"] > 1
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    args = c["args"]
    assert "--until-caught-up" not in args
    # One process per pod: the Deployment's replicas are the members, and the probes watch one port.
    assert parse_cli(args).replicas == 1
    port = int(args[args.index("--metrics-port") + 1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports[c["livenessProbe"]["httpGet"]["port"]] == port == ports[c["readinessProbe"]["httpGet"]["port"]]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["terminationGracePeriodSeconds"] >= 30


def test_cronjob_runs_until_caught_up_one_at_a_time():
    cron = manifests()["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1
    spec = pod_spec(cron)
    assert spec["restartPolicy"] == "OnFailure"
    assert parse_cli(spec["containers"][0]["args"]).until_caught_up


def test_configmap_specs_validate(tmp_path):
    cm = manifests()["ConfigMap"]
    names = set()
    paths = []
    for key, text in cm["data"].items():
        path = tmp_path / key
        path.write_text(text)
        paths.append(str(path))
        names.add(yaml.safe_load(text)["name"])
    import os
    env = {**os.environ, "KAFKA_BROKERS": "kafka:9092", "PGPASSWORD": "secret"}
    proc = run_kpipe("validate", *paths, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": ok (") == len(paths)
    groups = {yaml.safe_load(t)["source"].get("group", yaml.safe_load(t)["name"]) for t in cm["data"].values()}
    assert len(groups) == len(paths)  # the CronJob never joins the Deployment's group


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string((SYSTEMD / name).read_text())
    return cp


def exec_start(cp, env: dict | None = None) -> list[str]:
    """The unit's command for instance ``orders``, with ``env`` as its environment: an unquoted
    ``$NAME`` word is split at whitespace into zero or more words, as systemd does."""
    argv = []
    for word in shlex.split(cp["Service"]["ExecStart"].replace("%i", "orders")):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            argv += (env or {}).get(word[1:], "").split()
        else:
            argv.append(word)
    assert argv[0].endswith("/kpipe")
    return argv[1:]


def env_file(name: str) -> dict:
    """``KEY=VALUE`` lines of an ``EnvironmentFile=`` (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in (SYSTEMD / name).read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_long_running_unit():
    cp = unit("kpipe@.service")
    svc = cp["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0
    assert svc["Restart"] == "on-failure" and svc["RestartPreventExitStatus"] == "1"
    assert svc["KillSignal"] == "SIGTERM" and svc["KillMode"] == "mixed" and int(svc["TimeoutStopSec"]) > 0
    args = parse_cli(exec_start(cp))
    assert args.command == "run" and args.specs == ["/etc/kpipe/orders.yaml"] and not args.until_caught_up
    assert args.replicas == 1
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    assert svc["EnvironmentFile"].lstrip("-") == "/etc/kpipe/%i.env"


def test_long_running_unit_scales_out_with_replicas_from_its_environment_file():
    env = env_file("orders.env")
    args = parse_cli(exec_start(unit("kpipe@.service"), env))
    assert args.specs == ["/etc/kpipe/orders.yaml"] and args.replicas > 1
    assert args.metrics_port  # member i serves PORT+i
    assert "KAFKA_BROKERS" in env  # the spec's ${VAR} values live in the same file


def test_once_unit_and_timer():
    cp = unit("kpipe-once@.service")
    assert cp["Service"]["Type"] == "oneshot"
    args = parse_cli(exec_start(cp))
    assert args.command == "run" and args.until_caught_up
    timer = unit("kpipe-once@.timer")
    assert timer["Timer"]["Unit"] == "kpipe-once@%i.service" and timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == "timers.target"

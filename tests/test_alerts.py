"""The alert rules shipped in deploy/ (issue 26, item 2), checked with Prometheus' own promtool (Debian's
prometheus package; scripts/setup.sh --test installs it): the rules parse, each fires on recorded series
exactly when tests/alerts_test.yml says, deploy/prometheus.yml loads them, and every metric they read is
one the web or a worker serves."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO

RULES = REPO / "deploy" / "alerts.yml"
RULE_TESTS = REPO / "tests" / "alerts_test.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: scripts/setup.sh --test installs it (apt-get install -y prometheus)")
    return subprocess.run(["promtool", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def alert_names() -> set[str]:
    return {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule}


def test_promtool_checks_the_rules():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {rules} rules found" in checked.stdout, checked.stdout


def test_each_alert_fires_on_recorded_series_when_and_only_when_it_should():
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == quiet == alert_names()  # every alert is seen both firing and, earlier or later, not


def test_prometheus_config_loads_the_rules(tmp_path):
    """`promtool check config` on deploy/prometheus.yml as compose mounts it: the rules file beside it, the
    metrics token at its secret path (here a file of this test's, since promtool checks that it exists)."""
    token = tmp_path / "metrics_token"
    token.write_text("token\n")
    config = PROMETHEUS_CONFIG.read_text()
    assert yaml.safe_load(config)["rule_files"] == ["alerts.yml"]
    (tmp_path / "prometheus.yml").write_text(config.replace("/run/secrets/metrics_token", str(token)))
    shutil.copy(RULES, tmp_path / "alerts.yml")
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "rules found" in checked.stdout, checked.stdout


def served_names(text: str) -> set[str]:
    """The series names an exposition holds (a counter's _total, a histogram's _bucket, _sum, _count), samples or not."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes} | {sample.name for sample in family.samples}
    return names


def every_served_name(client, settings_override) -> set[str]:
    """The series names the web's /metrics serves, a worker's exporter (its GPU families from a reading: this
    machine may have no GPU), and Prometheus' own `up`."""
    from prometheus_client import CollectorRegistry, generate_latest

    from tests.test_prometheus import H100
    from worker import metrics as worker_metrics

    settings_override(METRICS_TOKEN="rules-token")
    web = client.get("/metrics", headers={"Authorization": "Bearer rules-token"})
    assert web.status_code == 200
    gpus = CollectorRegistry()
    gpus.register(worker_metrics.GpuCollector(lambda: [worker_metrics.GpuReading(**H100)]))
    return (
        served_names(web.get_data(as_text=True))
        | served_names(generate_latest(worker_metrics.REGISTRY).decode())
        | served_names(generate_latest(gpus).decode())
        | {"up"}
    )


def test_every_metric_the_rules_read_is_served(app, client, settings_override):
    """Renaming a metric must not leave an alert reading nothing: each name in an expression is in the web's
    /metrics, in a worker's exporter (its GPU families from a reading), or one of Prometheus' own (up)."""
    served = every_served_name(client, settings_override)
    recorded = {
        rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "record" in rule
    }
    expressions = " ".join(rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"])
    read = set(re.findall(r"\b(leukemia[a-z_:]*|up)\b(?=\s*[{\[)]|\s)", expressions)) - recorded
    assert read and read <= served, sorted(read - served)
    assert {
        "leukemia_jobs_ended_total",
        "leukemia_running_job_age_seconds",
        "leukemia_gpu_utilization_ratio",
        "leukemia_worker_job_gpu",
    } <= read

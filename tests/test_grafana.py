"""The Grafana dashboard shipped in deploy/ (issue 26, item 7) and its provisioning, checked without a Grafana
(none installs here: Debian ships none and its own packages come from Grafana's site): the dashboard against
Grafana's published JSON schema (grafana-foundation-sdk v0.0.18, tests/grafana_schema, Apache-2.0) with
each panel's options and each query against its plugin's schema; the layout and data source references
Grafana needs; every expression parsed by Prometheus' own promtool; every metric it reads one the web or a
worker serves; the provisioning files against compose and deploy/prometheus.yml."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import yaml

from tests.conftest import REPO
from tests.test_alerts import every_served_name, promtool
from tests.test_compose import compose, filled_env, interpolate

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "leukemia.json"
SCHEMAS = REPO / "tests" / "grafana_schema"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}  # every panel's and query's: the dashboard's variable
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}  # built-ins, as promtool gets them
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(board: dict) -> list[dict]:
    """Every panel, the rows' own panels (a collapsed row holds them) included."""
    return [panel for top in board["panels"] for panel in (top, *top.get("panels", []))]


def queries(board: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in all_panels(board) if panel["type"] != "row" for target in panel["targets"]]


def schema_errors(name: str, instance, definition: str | None = None) -> list[str]:
    """What tests/grafana_schema/<name>.jsonschema.json (one of its definitions, if named) finds wrong in instance."""
    schema = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    if definition:
        schema = {**schema, "$ref": f"#/definitions/{definition}"}
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


def test_the_dashboard_is_valid_by_grafanas_schema():
    board = dashboard()
    assert schema_errors("dashboard", board) == []
    for panel in all_panels(board):
        if panel["type"] == "row":
            continue
        # Each panel type's options (and a time series' field style) by its plugin's schema, each query by Prometheus'.
        assert panel["type"] in ("timeseries", "stat"), f"{panel['title']}: no schema of {panel['type']} in tests/grafana_schema"
        assert schema_errors(panel["type"], panel["options"], "Options") == [], panel["title"]
        if panel["type"] == "timeseries":
            assert schema_errors("timeseries", panel["fieldConfig"]["defaults"]["custom"], "FieldConfig") == [], panel["title"]
        for target in panel["targets"]:
            assert schema_errors("prometheus", target) == [], panel["title"]
    # The schema does refuse what Grafana would not load: a misspelt key, a panel wider than the grid.
    broken = copy.deepcopy(board)
    broken["panels"][1]["gridpos"] = broken["panels"][1].pop("gridPos")
    broken["panels"][2]["gridPos"]["w"] = 25
    assert len(schema_errors("dashboard", broken)) >= 2


def test_layout_ids_and_data_source_references():
    """What the schema leaves to Grafana: ids unique, panels inside the 24 columns and apart, every query on the
    ${datasource} variable, which the dashboard declares, and no other variable used."""
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36  # data sources as {type, uid}
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]) and board["title"]
    panels = all_panels(board)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    cells = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE and panel["targets"], panel["title"]
            assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), panel["title"]
    assert all(target["datasource"] == DATASOURCE for _, target in queries(board))
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    used = set(re.findall(r"\$\{?(\w+)", DASHBOARD.read_text()))
    assert used <= {variable["name"], *GRAFANA_VARIABLES}, used


def grafana_free(expr: str) -> str:
    """The expression as Prometheus gets it, Grafana's built-in variables replaced."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def test_promtool_parses_every_expression(tmp_path):
    """Each query as a recording rule: `promtool check rules` parses it with Prometheus' own PromQL parser."""
    rules = [
        {"record": f"dashboard:panel{panel['id']}_{target['refId']}", "expr": grafana_free(target["expr"])}
        for panel, target in queries(dashboard())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout, checked.stdout


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers less label matchers, ranges, label lists,
    functions and keywords."""
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return set(re.findall(r"\b([A-Za-z_:][\w:]*)\b(?!\s*\()", expr)) - PROMQL_WORDS


def test_every_metric_the_dashboard_reads_is_served(app, client, settings_override):
    """Renaming a metric must not leave a panel empty: each name an expression reads is in the web's /metrics,
    a worker's exporter (its GPU families from a reading), or Prometheus' own `up`."""
    assert metric_names('sum by (kind) (rate(a_total{x="y"}[5m])) * on (gpu) group_left (name) b') == {"a_total", "b"}
    read = set().union(*(metric_names(grafana_free(target["expr"])) for _, target in queries(dashboard())))
    served = every_served_name(client, settings_override)
    assert read <= served, sorted(read - served)
    assert {
        "leukemia_queue_depth",
        "leukemia_jobs",
        "leukemia_jobs_ended_total",
        "leukemia_running_job_age_seconds",
        "leukemia_workers",
        "leukemia_worker_current_job_id",
        "leukemia_gpu_utilization_ratio",
        "leukemia_gpu_memory_used_bytes",
        "leukemia_gpu_temperature_celsius",
    } <= read


def test_compose_provisions_the_data_source_and_the_dashboard():
    """The grafana service of the monitoring profile mounts the provisioning where Grafana reads it and the
    dashboards where the provider looks; the data source is compose's prometheus at its container port, its
    scrape interval deploy/prometheus.yml's."""
    services = interpolate(compose(), filled_env())["services"]
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", grafana["image"])  # pinned
    assert grafana["image"] in (REPO / "docs" / "deploy.md").read_text()
    assert grafana["profiles"] == ["monitoring"] and grafana["ports"] == ["127.0.0.1:3000:3000"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"] if volume.endswith(":ro"))
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/etc/grafana/dashboards",
    }
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "leukemia.yml").read_text())
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert providers["apiVersion"] == sources["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / "deploy" / "grafana" / "dashboards" / home.removeprefix("/etc/grafana/dashboards/")) == DASHBOARD

    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    prometheus_port = int(services["prometheus"]["ports"][0].rsplit(":", 1)[1])
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    scrape_interval = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape_interval
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}

"""Prometheus, alerting and Grafana files against the real thing: promtool, the metric names the service exports,
a real Prometheus server scraping a running serving role, and the training report."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import learnstream.metrics  # noqa: F401 - registers every learnstream metric in the default registry
from learnstream.config import Settings
from learnstream.training_state import TrainerState
from ops.broker import free_port
from ops.report import write_report
from serving.backends import RouterMetrics

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"
ALERT_RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "learnstream.json"
INSTALL_HINT = "run ops/install_prometheus.sh (it installs Debian's prometheus package, with promtool)"

# The series a metric family of each type puts in the exposition (a counter `x` is scraped as x_total...).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Series Prometheus itself records for every target.
PROMETHEUS_SERIES = {"up"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan"}

T = TypeVar("T")


def require(binary: str) -> str:
    """The binary's path; a missing Prometheus fails loudly rather than skipping the proof."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed: {INSTALL_HINT}")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60)


# ---- promtool: config, rules, and the alerts firing on the conditions they name ---------------------------------


@pytest.mark.parametrize("kind, path", [("config", PROMETHEUS_CONFIG), ("rules", ALERT_RULES)])
def test_promtool_accepts_the_files(kind: str, path: Path) -> None:
    result = promtool("check", kind, str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def alert_case(name: str, series: dict[str, str], *, at: str, firing: list[dict[str, str]]) -> dict[str, Any]:
    """A promtool rule test: given input series (one sample a minute), exactly these alerts fire at `at`."""
    def selector(labels: dict[str, str]) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted({**labels, "alertstate": "firing"}.items()))
        return f"ALERTS{{{inner}}}"

    return {
        "name": name,
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "promql_expr_test": [{"expr": 'ALERTS{alertstate="firing"}', "eval_time": at,
                              "exp_samples": [{"labels": selector(f), "value": 1} for f in firing]}],
    }


SERVING = 'job="learnstream-serving",instance="serving-1:8000"'
WORKER = 'job="learnstream-workers",instance="anonymizer-1:9464"'
LAG = f'learnstream_consumer_lag_records{{{WORKER},group="anonymizer",topic="chat.raw",partition="0"}}'
CONSUMED = f'learnstream_events_consumed_total{{{WORKER},group="anonymizer",topic="chat.raw"}}'
HEALTHY_SERVING = {
    f"up{{{SERVING}}}": "1x40",
    f'learnstream_served_version{{{SERVING},family="chat"}}': "3x40",
    f'learnstream_served_version{{{SERVING},family="image"}}': "0x40",
}
ALERT_CASES = [
    alert_case("a healthy stack fires nothing", {
        **HEALTHY_SERVING, f"up{{{WORKER}}}": "1x40", LAG: "0 20 5 0 40 10 0x34", CONSUMED: "0+50x40",
        f'learnstream_dlq_total{{{WORKER},topic="chat.raw",reason="invalid_json"}}': "0 0 1 1 1 2 2 2 3x33",
        f"learnstream_anonymizer_names_disabled{{{WORKER}}}": "0x40",
    }, at="40m", firing=[]),
    alert_case("a group falling behind", {**HEALTHY_SERVING, LAG: "0+100x40", CONSUMED: "0+50x40"}, at="40m",
               firing=[{"alertname": "LearnstreamConsumerLagGrowing", "severity": "warning",
                        "group": "anonymizer", "topic": "chat.raw"}]),
    alert_case("a stalled consumer", {**HEALTHY_SERVING, LAG: "500x40", CONSUMED: "1000x40"}, at="30m",
               firing=[{"alertname": "LearnstreamConsumerStalled", "severity": "critical",
                        "group": "anonymizer", "topic": "chat.raw"}]),
    alert_case("a burst of dead letters under a new reason", {
        **HEALTHY_SERVING, f'learnstream_dlq_total{{{WORKER},topic="chat.raw",reason="wrong_type"}}': "_x30 40x10",
    }, at="37m", firing=[{"alertname": "LearnstreamDeadLettersRising", "severity": "warning",
                          "topic": "chat.raw", "reason": "wrong_type"}]),
    alert_case("the first training failure", {
        **HEALTHY_SERVING, 'learnstream_training_failures_total{job="learnstream-workers",instance="trainer-1:9464",'
                           'family="chat"}': "_x10 1x30",
    }, at="12m", firing=[{"alertname": "LearnstreamTrainingFailed", "severity": "warning", "family": "chat",
                          "job": "learnstream-workers", "instance": "trainer-1:9464"}]),
    alert_case("a replica without an image model", {
        f"up{{{SERVING}}}": "1x40", f'learnstream_served_version{{{SERVING},family="chat"}}': "3x40",
    }, at="15m", firing=[{"alertname": "LearnstreamNoServedModel", "severity": "critical", "family": "image",
                          "job": "learnstream-serving", "instance": "serving-1:8000"}]),
    alert_case("names passing through, a worker down", {
        **HEALTHY_SERVING, f"learnstream_anonymizer_names_disabled{{{WORKER}}}": "1x40",
        'up{job="learnstream-workers",instance="store-1:9464"}': "0x40",
    }, at="10m", firing=[
        {"alertname": "LearnstreamNamesNotRemoved", "severity": "critical",
         "job": "learnstream-workers", "instance": "anonymizer-1:9464"},
        {"alertname": "LearnstreamTargetDown", "severity": "critical",
         "job": "learnstream-workers", "instance": "store-1:9464"},
    ]),
]


def test_alerts_fire_on_what_they_name_and_only_then(tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"  # JSON is YAML
    tests.write_text(json.dumps({"rule_files": [str(ALERT_RULES)], "evaluation_interval": "1m",
                                 "tests": ALERT_CASES}))
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


# ---- every metric a panel or rule queries is one the service exports --------------------------------------------


def queried_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana's $__variables allowed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals: label values, label_replace arguments
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers; range and subquery windows
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)  # not functions, not inside numbers
    return {name for name in names if name.lower() not in PROMQL_KEYWORDS}


def test_queried_metrics_reads_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (arm, le) (rate(a_bucket{x="y:z"}[$__rate_interval]))) / on (arm) '
            'group_left sum(b_total offset 1h) > 1e3 and label_replace(up == 1, "f", "chat", "", "")')
    assert queried_metrics(expr) == {"a_bucket", "b_total", "up"}


def exported_series() -> set[str]:
    """Series names of every family GET /metrics serves: the default registry (learnstream.metrics, process and
    platform collectors) and the chat router's A/B metrics, which each serving replica keeps in its own registry."""
    router = CollectorRegistry()
    RouterMetrics(router)
    return {
        family.name + suffix
        for registry in (REGISTRY, router)
        for family in registry.collect()
        for suffix in SERIES_SUFFIXES[family.type]
    }


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every query of the dashboard, rows' nested panels included."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
            yield from walk(panel.get("panels", []))

    return walk(json.loads(DASHBOARD.read_text())["panels"])


def alert_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def test_every_queried_metric_is_exported() -> None:
    exported = exported_series() | PROMETHEUS_SERIES
    queries = [("panel", *q) for q in dashboard_queries()] + [("alert", *q) for q in alert_queries()]
    unknown = [f"{kind} {title!r} queries {sorted(queried_metrics(expr) - exported)}"
               for kind, title, expr in queries if queried_metrics(expr) - exported]
    assert not unknown, "\n".join(unknown)
    blind = [f"{kind} {title!r}" for kind, title, expr in queries if not queried_metrics(expr)]
    assert not blind, f"queries without a metric: {blind}"


def test_every_dashboard_panel_queries_something() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    empty = [p["title"] for p in panels if p["type"] != "row" and not p.get("targets")]
    assert not empty and len(panels) > 20, empty


# ---- a real Prometheus server scraping the real serving role ----------------------------------------------------


async def eventually(probe: Callable[[], Awaitable[T | None]], *, what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while (value := await probe()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return value


@contextmanager
def prometheus_server(tmp_path: Path, *, target: str, token: str) -> Iterator[str]:
    """A real Prometheus scraping `target` every second as the learnstream-serving job, sending `token` as the
    repository's prometheus.yml does (from a file); yields its base URL."""
    token_file = tmp_path / "admin_token"
    token_file.write_text(token)
    [job] = [j for j in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
             if j["job_name"] == "learnstream-serving"]
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "learnstream-serving", "static_configs": [{"targets": [target]}],
                            "authorization": {**job["authorization"], "credentials_file": str(token_file)}}],
    }))
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [require("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={address}"],
            stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://{address}"
    except BaseException:
        print(log.read_text()[-3000:])  # shown by pytest with the failure
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def instant_query(http: aiohttp.ClientSession, prometheus: str, expr: str) -> list[dict[str, Any]] | None:
    """The result vector; None while the server is not answering yet."""
    try:
        async with http.get(f"{prometheus}/api/v1/query", params={"query": expr}) as response:
            body = await response.json()
    except aiohttp.ClientConnectionError:
        return None
    assert body["status"] == "success", body
    return body["data"]["result"]


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {sample["metric"][label]: float(sample["value"][1]) for sample in result}


def chat_event(n: int) -> dict[str, Any]:
    return {"schema": "chat.v1", "event_id": f"obs-{n}", "ts": "2026-11-01T10:00:00Z", "user_id": "u-obs",
            "session_id": "s-obs", "role": "patient", "text": "hello", "consent": {"training": True}}


@pytest.mark.kafka
async def test_a_real_prometheus_scrapes_the_serving_role(make_settings, start_pipeline, tmp_path: Path) -> None:
    settings = make_settings(api_tokens="app:obs-app-token,admin:obs-admin-token")
    serving = f"127.0.0.1:{settings.http_port}"
    app, admin = {"Authorization": "Bearer obs-app-token"}, {"Authorization": "Bearer obs-admin-token"}
    # Started first: its own start-up overlaps the pipeline's; until serving listens, scrapes fail (target down).
    with prometheus_server(tmp_path, target=serving, token="obs-admin-token\n") as prometheus:
        pipeline = await start_pipeline(settings, roles=("serving", "trainer"))

        async def served() -> dict[str, int] | None:
            versions = {family: holder.version for family, holder in pipeline.serving.holders.items()}
            return None if None in versions.values() else versions

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async def scraped(expr: str, label: str, expected: dict[str, float]) -> dict[str, float] | None:
                result = await instant_query(http, prometheus, expr)
                values = None if result is None else by_label(result, label)
                return values if values == expected else None

            expected_versions = await eventually(served, what="serving to load both families", timeout=45)
            body = b"\n".join(orjson.dumps(chat_event(n)) for n in range(3))
            async with http.get(f"http://{serving}/metrics") as response:
                assert response.status == 401  # an anonymous scrape gets nothing
            async with http.get(f"http://{serving}/metrics", headers=admin) as response:
                fresh = await response.text()
            # Known label values exist before their first event (at 0 in a fresh process; earlier tests in this one
            # may have counted some), so dashboards and alerts read 0 on a fresh stack, not "no data".
            for series in ('learnstream_dlq_total{reason="unsealable",topic="image.anon"} ',
                           'learnstream_chat_request_seconds_count{backend="safety"} ',
                           'learnstream_chat_backend_requests_total{arm="treatment",backend="local"} '):
                assert series in fresh, series
            assert re.search(r'learnstream_safety_flags_total\{category="[a-z_]+",layer="rules"\} ', fresh)
            async with http.post(f"http://{serving}/api/events", data=body, headers=app) as response:
                assert response.status == 202, await response.text()
            produced = REGISTRY.get_sample_value("learnstream_events_produced_total", {"topic": "chat.raw"})

            async with http.get(f"http://{serving}/metrics", headers=admin) as response:
                exposition = await response.text()
            lint = promtool("check", "metrics", stdin=exposition)
            assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr

            await eventually(lambda: scraped('up{job="learnstream-serving"}', "job", {"learnstream-serving": 1}),
                             what="the serving target to be up")
            await eventually(lambda: scraped("learnstream_served_version", "family", expected_versions),
                             what=f"learnstream_served_version == {expected_versions}")
            await eventually(lambda: scraped('learnstream_events_produced_total{topic="chat.raw"}', "topic",
                                             {"chat.raw": produced}),
                             what=f"learnstream_events_produced_total{{topic=chat.raw}} == {produced}")
            for alert, expr in alert_queries():  # every rule runs on the real server, over real series
                result = await instant_query(http, prometheus, expr)
                if alert in ("LearnstreamNoServedModel", "LearnstreamTargetDown"):
                    assert result == [], f"{alert} would fire: {result}"


# ---- the training report ----------------------------------------------------------------------------------------


def test_report_plots_every_run_and_summarizes_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    state = TrainerState(settings.data_dir)
    runs = [("chat", 1, "promoted", 40, 2.9), ("chat", 2, "rejected", 35, 3.4), ("chat", 3, "promoted", 50, 2.5),
            ("image", 1, "promoted", 12, None)]
    for family, version, decision, samples, loss in runs:
        metrics = {"duration_s": 10.0 + version} | ({"eval_loss": loss} if loss is not None else {})
        state.record_run({"family": family, "version": version, "decision": decision, "samples": samples,
                          "watermark": samples, "metrics": metrics, "path": f"{family}/{version}"},
                         registry_dir=settings.registry_dir)
    png, page = write_report(settings, tmp_path / "report")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 10_000
    html = page.read_text()
    assert png.name in html and "rejected" in html and "2.5" in html
    assert html.count("<tr>") == len(runs) + 2  # a header row per family


def test_report_without_runs_says_so(tmp_path: Path) -> None:
    png, page = write_report(Settings(data_dir=tmp_path / "data"), tmp_path / "report")
    assert png.exists() and "no training runs yet" in page.read_text()

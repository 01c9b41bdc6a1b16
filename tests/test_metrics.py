"""Prometheus metrics: /metrics scraped over HTTP from the real daemon during end-to-end runs
(checked against what the SMTP capture received, and by ``promtool check metrics``); the
shipped alert rules (``promtool check rules`` and ``test rules``) and Grafana dashboard.

promtool comes from the Debian package ``prometheus``; without it these tests fail, they
do not skip.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from listd import __version__, config
from listd.config import ConfigError
from listd.metrics import Metrics
from listd.store import Effects, NewOutgoing, Store
from tests.listd_env import ROOT, ListdEnv, make_message, stop, wait_until
from tests.servers.dovecot import Dovecot
from tests.servers.idp import FakeIdp
from tests.servers.notifysocket import NotifySocket
from tests.servers.ports import free_port
from tests.servers.smtpcapture import SmtpCapture
from tests.test_oauth import OAuthEnv, microsoft

ALERTS = ROOT / "packaging" / "prometheus" / "listd-alerts.yml"
ALERT_TESTS = ROOT / "packaging" / "prometheus" / "listd-alerts.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "listd.json"
EX_UNAVAILABLE = 69
EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
METRIC_NAME = re.compile(r"\blistd_\w+")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers ----------------------------------------------------------------------------------

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install the Debian package prometheus "
                    "(apt-get install --no-install-recommends prometheus)", pytrace=False)
    return path


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text: str = response.read().decode()
    return text


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` that carry ``labels``."""
    wanted = set(labels.items())
    matching = [v for (n, have), v in found.items() if n == name and wanted <= have]
    assert matching, f"no sample {name}{labels or ''} in the scrape"
    return sum(matching)


def check_metrics(text: str) -> None:
    """``promtool check metrics``: exposition format and naming conventions (lint)."""
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


def assert_no_addresses_in_labels(found: Samples) -> None:
    leaked = [(name, dict(labels)) for name, labels in found
              if any(EMAIL.search(v) for _, v in labels)]
    assert leaked == []


def dashboard_expressions() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in document["panels"]
                   for target in panel.get("targets", [])]
    expressions += [var["definition"] for var in document["templating"]["list"]
                    if var["type"] == "query"]
    return expressions


def alert_expressions() -> list[str]:
    document = yaml.safe_load(ALERTS.read_text())
    return [str(rule["expr"]) for group in document["groups"] for rule in group["rules"]]


def sample_names(found: Samples) -> set[str]:
    return {name for name, _ in found}


@pytest.fixture
def metrics_env(tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> Iterator[ListdEnv]:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.document["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    env.write()
    env.subscribe("friends", "Alice Example <alice@example.test>", "bob@example.test",
                  "carol@example.test", "dave@example.test")
    result = env.listctl("unsubscribe", "friends", "dave@example.test")
    assert result.returncode == 0, result.stderr
    yield env


def port_of(env: ListdEnv) -> int:
    return int(str(env.document["metrics"]["listen"]).rpartition(":")[2])


def dsn(recipient: str) -> bytes:
    """A standard RFC 3464 bounce of a copy from the list friends."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: friends@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{time.monotonic_ns()}@mx.example.net>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: Alice via Friends <friends@example.test>\r\n"
        "List-Id: Friends of the garden <friends.example.test>\r\n"
        "\r\n--b--\r\n").encode()


# --- the real daemon, scraped --------------------------------------------------------------


def test_metrics_of_a_real_run_match_what_the_smtp_server_received(
        metrics_env: ListdEnv, smtp: SmtpCapture) -> None:
    env, port = metrics_env, port_of(metrics_env)
    smtp.rcpt_codes = {"carol@example.test": (550, "5.1.1 no such user")}
    smtp.data_failures = [(451, "4.3.0 try again later")]  # one transaction deferred once
    started = time.time()
    with NotifySocket() as notify:
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path)})
        try:
            notify.wait_for("READY", "1")
            # The endpoint is bound before READY: no waiting, no retry.
            first = samples(scrape(port))
            assert value(first, "listd_build_info", version=__version__) == 1
            assert value(first, "listd_deliveries_pending", list="friends") == 0

            env.post(make_message(subject="a post"))  # to bob and carol (550)
            env.post(make_message(sender="Mallory <mallory@example.test>"))  # refused
            env.post(make_message(sender="Erin <erin@example.test>",
                                  to="friends-request@example.test", subject="subscribe"))
            env.post(dsn("bob@example.test"))  # counted against bob, nothing sent
            # bob: the post; mallory and the owner: the refusal; erin: the confirmation.
            smtp.wait_for(lambda msgs: sum(len(m.rcpts) for m in msgs) >= 4, timeout=30)

            last: dict[str, float] = {}

            def settled() -> bool:
                found = samples(scrape(port))
                last.update(failed=value(found, "listd_deliveries_total", result="failed"),
                            sent=value(found, "listd_deliveries_total", result="sent"),
                            pending=value(found, "listd_deliveries_pending"),
                            bounces=value(found, "listd_bounces_total"))
                return (last["failed"] == 1 and last["sent"] >= 4 and last["pending"] == 0
                        and last["bounces"] == 1)
            try:
                wait_until(settled, timeout=60)
                done = True
            except AssertionError:
                done = False
            text = scrape(port)
        finally:
            code, stderr = stop(daemon)
    # On failure, say what the metrics showed, what arrived and what listd logged.
    assert done, (f"metrics did not settle: {last}; captured "
                  f"{[m.rcpts for m in smtp.messages]}; listd said:\n{stderr}")
    assert code == 0, stderr
    found = samples(text)

    captured = sum(len(m.rcpts) for m in smtp.messages)
    assert captured == 4
    # Counters match what the SMTP server received.
    assert value(found, "listd_deliveries_total", result="sent") == captured
    assert value(found, "listd_deliveries_total", list="friends", result="failed") == 1
    assert value(found, "listd_deliveries_total", list="friends", result="deferred") >= 1
    assert value(found, "listd_messages_fetched_total") == 4
    assert value(found, "listd_messages_duplicates_total") == 0
    assert value(found, "listd_decisions_total", kind="post") == 2
    assert value(found, "listd_decisions_total", kind="command") == 1
    assert value(found, "listd_decisions_total", kind="bounce") == 1
    assert value(found, "listd_decisions_total", kind="error") == 0
    assert value(found, "listd_posts_relayed_total", list="friends") == 1
    assert value(found, "listd_posts_refused_total", list="friends") == 1
    assert value(found, "listd_posts_held_total", list="friends") == 0
    assert value(found, "listd_commands_total", list="friends", verb="subscribe") == 1
    assert value(found, "listd_commands_total", list="friends") == 1
    assert value(found, "listd_bounces_total", list="friends") == 1
    # What the database holds, read at scrape time: the queue is empty...
    assert value(found, "listd_deliveries_pending") == 0
    assert value(found, "listd_deliveries_oldest_pending_age_seconds", list="friends") == 0
    # ... and the subscribers are what listctl says.
    members = env.listctl("members", "friends", "--json")
    assert members.returncode == 0, members.stderr
    statuses = collections.Counter(json.loads(line)["status"]
                                   for line in members.stdout.splitlines())
    assert statuses == {"active": 3, "unsubscribed": 1}
    for status in ("active", "pending", "disabled", "unsubscribed"):
        assert value(found, "listd_subscribers", list="friends",
                     status=status) == statuses[status], status
    # Connections and the loop.
    assert value(found, "listd_imap_up") == 1 and value(found, "listd_smtp_up") == 1
    assert value(found, "listd_imap_errors_total") == 0
    assert started <= value(found, "listd_last_successful_poll_timestamp_seconds") <= time.time()
    assert value(found, "listd_poll_duration_seconds_count") >= 1
    assert value(found, "listd_delivery_run_duration_seconds_count") >= 1
    # No token metrics without OAuth2.
    assert not any(name.startswith("listd_oauth_") for name in sample_names(found))

    check_metrics(text)
    assert_no_addresses_in_labels(found)
    # Everything the dashboard and the alerts use exists (token metrics: see the OAuth2 test).
    names = sample_names(found)
    used = {n for e in dashboard_expressions() + alert_expressions()
            for n in METRIC_NAME.findall(e)}
    assert used - names == {"listd_oauth_token_expiry_timestamp_seconds",
                            "listd_oauth_token_refresh_failures"}


def test_oauth2_token_metrics_and_everything_the_dashboard_uses(
        tmp_path: Path, dovecot_oauth: Dovecot, smtp_oauth: SmtpCapture,
        idp: FakeIdp) -> None:
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "app-only"))
    port = free_port()
    env.document["metrics"] = {"listen": port}  # a bare port: on 127.0.0.1
    env.write()
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    daemon = env.start()
    try:
        env.post(make_message())
        smtp_oauth.wait_for(lambda msgs: len(msgs) == 1, timeout=30)
        wait_until(lambda: value(samples(scrape(port)), "listd_deliveries_total",
                                 result="sent") == 1, timeout=30)
        text = scrape(port)
    finally:
        code, stderr = stop(daemon)
    env.output.append(stderr)
    assert code == 0, stderr
    found = samples(text)
    expiry = value(found, "listd_oauth_token_expiry_timestamp_seconds")
    assert time.time() < expiry <= time.time() + idp.access_lifetime
    assert value(found, "listd_oauth_token_refresh_failures") == 0
    check_metrics(text)
    assert_no_addresses_in_labels(found)
    names = sample_names(found)
    for expression in dashboard_expressions() + alert_expressions():
        unknown = set(METRIC_NAME.findall(expression)) - names
        assert not unknown, f"{expression!r} uses metrics listd does not export: {unknown}"
    env.assert_no_secrets_printed()


def test_failing_token_refresh_shows(tmp_path: Path, dovecot_oauth: Dovecot,
                                     smtp_oauth: SmtpCapture, idp: FakeIdp) -> None:
    env = OAuthEnv(tmp_path, dovecot_oauth, smtp_oauth, idp, microsoft(idp, "app-only"))
    port = free_port()
    env.document["metrics"] = {"listen": f"127.0.0.1:{port}"}
    env.write()
    # Refused twice: listd's first try and its retry with a fresh token; it then pauses.
    idp.token_failures = [(401, {"error": "invalid_client",
                                 "error_description": "AADSTS7000215: Invalid client secret"})] * 2
    daemon = env.start()
    try:
        def failed() -> bool:
            try:
                found = samples(scrape(port))
            except OSError:
                return False  # not listening yet
            return ("listd_oauth_token_refresh_failures", frozenset()) in found and value(
                found, "listd_oauth_token_refresh_failures") == 2
        wait_until(failed, timeout=30)
        found = samples(scrape(port))
    finally:
        code, stderr = stop(daemon)
    assert code == 0, stderr
    assert value(found, "listd_imap_up") == 0
    assert value(found, "listd_imap_errors_total") >= 1
    # Never signed in: no expiry to show.
    assert "listd_oauth_token_expiry_timestamp_seconds" not in sample_names(found)


def test_a_port_that_cannot_be_bound_stops_the_start_before_ready(
        metrics_env: ListdEnv) -> None:
    env, port = metrics_env, port_of(metrics_env)
    with socket.socket() as taken, NotifySocket() as notify:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path)})
        try:
            _, stderr = daemon.communicate(timeout=30)
        finally:
            if daemon.poll() is None:
                stop(daemon)
        assert daemon.returncode == EX_UNAVAILABLE, stderr
        assert f"cannot serve metrics on 127.0.0.1:{port} (metrics.listen in " \
               f"{env.config_path})" in stderr
        assert "Address already in use" in stderr
        assert not [n for n in notify.received if "READY" in n.fields]
        # listd --once serves no metrics: it runs beside a daemon holding the port.
        env.once()


def test_no_endpoint_without_metrics_listen(metrics_env: ListdEnv) -> None:
    env, port = metrics_env, port_of(metrics_env)
    del env.document["metrics"]
    env.write()
    with NotifySocket() as notify:
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path)})
        try:
            notify.wait_for("READY", "1")
            with pytest.raises(OSError):
                scrape(port)
        finally:
            code, stderr = stop(daemon)
    assert code == 0, stderr


# --- in-process: the store collector, several registries -------------------------------------


def test_queue_depth_and_oldest_age_per_list_from_the_store(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    now = [1_000_000.0]
    try:
        effects = Effects(outgoing=[
            NewOutgoing("friends", "notice", "friends@example.test", b"x",
                        ["a@example.test", "b@example.test"]),
            NewOutgoing("chess", "notice", "chess@example.test", b"y", ["c@example.test"])])
        store.apply(effects, now[0] - 300)
        store.apply(Effects(outgoing=[NewOutgoing("friends", "notice",
                                                  "friends@example.test", b"z",
                                                  ["d@example.test"])]), now[0] - 60)
        one, two = Metrics(store.path, lambda: now[0]), Metrics(store.path, lambda: now[0])
        try:
            for metrics in (one, two):  # separate registries: no clash
                text = prometheus_text(metrics)
                found = samples(text)
                assert value(found, "listd_deliveries_pending", list="friends") == 3
                assert value(found, "listd_deliveries_pending", list="chess") == 1
                assert value(found, "listd_deliveries_oldest_pending_age_seconds",
                             list="friends") == 300
                assert value(found, "listd_deliveries_oldest_pending_age_seconds",
                             list="chess") == 300
                check_metrics(text)
        finally:
            one.close()
            two.close()
    finally:
        store.close()


def prometheus_text(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


# --- the shipped alert rules and dashboard ---------------------------------------------------


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool(), "test", "rules", ALERT_TESTS.name],
                            cwd=ALERT_TESTS.parent, capture_output=True, text=True,
                            timeout=120, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    names = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
             for rule in group["rules"]}
    tested_names = {case["alertname"] for test in yaml.safe_load(ALERT_TESTS.read_text())[
        "tests"] for case in test["alert_rule_test"]}
    assert names == tested_names  # every alert has a test


def test_dashboard_uses_a_datasource_variable() -> None:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    titles = set()
    for panel in document["panels"]:
        titles.add(panel["title"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert METRIC_NAME.search(target["expr"]), target["expr"]
    for wanted in ("Deliveries by result", "Delivery queue", "Posts relayed per list",
                   "Subscribers", "IMAP / SMTP state", "Time since the last successful poll",
                   "OAuth2 token", "Bounces"):
        assert wanted in titles
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))


# --- configuration ------------------------------------------------------------------------------

CONFIG = """\
state_dir: {state}
imap: {{host: imap.example.org, username: lists@example.org}}
smtp: {{host: smtp.example.org}}
auth: {{password_file: {password}}}
"""


def load_with(tmp_path: Path, metrics: str) -> config.Config:
    password = tmp_path / "password"
    password.write_text("secret\n")
    password.chmod(0o600)
    path = tmp_path / "listd.yml"
    path.write_text(CONFIG.format(state=tmp_path / "state", password=password) + metrics)
    return config.load(path)


@pytest.mark.parametrize(("text", "listen"), [
    ("", None),
    ("metrics:\n", None),
    ("metrics: {}\n", None),
    ("metrics:\n  listen: 127.0.0.1:9163\n", ("127.0.0.1", 9163)),
    ("metrics:\n  listen: 9163\n", ("127.0.0.1", 9163)),
    ("metrics:\n  listen: '[::1]:9163'\n", ("::1", 9163)),
    ("metrics:\n  listen: localhost:9163\n", ("localhost", 9163)),
    ("metrics:\n  listen: 0.0.0.0:9163\n", ("0.0.0.0", 9163)),
])
def test_metrics_listen(tmp_path: Path, text: str, listen: tuple[str, int] | None) -> None:
    assert load_with(tmp_path, text).metrics.listen == listen


@pytest.mark.parametrize(("text", "error"), [
    ("metrics:\n  listen: 127.0.0.1\n",
     "6: metrics.listen: '127.0.0.1' is not HOST:PORT; write for example 127.0.0.1:9163"),
    ("metrics:\n  listen: 127.0.0.1:70000\n",
     "6: metrics.listen: port 70000 is not between 1 and 65535"),
    ("metrics:\n  listen: '[nothost]:9163'\n", "6: metrics.listen: '[nothost]:9163' is not"),
    ("metrics:\n  listen: true\n", "6: metrics.listen: must be a string or a whole number"),
    ("metrics:\n  port: 9163\n", "6: metrics.port: unknown key"),
])
def test_bad_metrics_listen(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_with(tmp_path, text)
    assert error in str(caught.value)

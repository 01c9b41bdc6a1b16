"""The daemon under a supervisor: READY, reload on SIGHUP, clean stop on SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.listd_env import ListdEnv, make_message, stop
from tests.servers.dovecot import Dovecot
from tests.servers.notifysocket import NotifySocket
from tests.servers.smtpcapture import SmtpCapture


def test_sighup_reloads_lists_and_a_broken_config_keeps_the_running_one(
        tmp_path: Path, dovecot: Dovecot, smtp: SmtpCapture) -> None:
    env = ListdEnv(tmp_path, dovecot, smtp.port)
    env.subscribe("friends", "alice@example.test", "bob@example.test")
    with NotifySocket() as notify:
        daemon = env.start(environ={"NOTIFY_SOCKET": str(notify.path)})
        try:
            (ready,) = notify.wait_for("READY", "1")
            assert ready.pid == daemon.pid

            chess: dict[str, Any] = {"address": "chess@example.test", "name": "Chess",
                                     "posting": "open"}
            env.document["lists"]["chess"] = chess
            env.write()
            env.subscribe("chess", "carol@example.test")
            daemon.send_signal(signal.SIGHUP)
            (reloading,) = notify.wait_for("RELOADING", "1")
            # CLOCK_MONOTONIC in µs, as systemd wants it with RELOADING=1 (time.monotonic()
            # is the same clock on Linux).
            assert abs(int(reloading.fields["MONOTONIC_USEC"]) / 1e6 - reloading.at) < 5
            assert reloading.pid == daemon.pid
            reloaded = notify.wait_for("READY", "1", count=2)[1]
            assert reloaded.at >= reloading.at
            env.post(make_message(to="chess@example.test", subject="opening"))
            smtp.wait_for(lambda msgs: any(m.rcpts == ["carol@example.test"] for m in msgs))

            env.config_path.write_text("lists: [this is not a mapping\n")
            daemon.send_signal(signal.SIGHUP)
            notify.wait_for("READY", "1", count=3)
            env.post(make_message(subject="still served"))
            smtp.wait_for(lambda msgs: any(m.rcpts == ["bob@example.test"] for m in msgs))
        finally:
            code, stderr = stop(daemon)
        notify.wait_for("STOPPING", "1")
    assert code == 0, stderr
    assert "configuration not reloaded, keeping the running one" in stderr
    assert "listd.yml:2: not valid YAML" in stderr

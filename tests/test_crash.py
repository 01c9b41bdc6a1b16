"""kill -9 at random moments of a fan-out: nothing lost, duplicates bounded by one batch.

A deliberately slow SMTP server keeps every transaction in flight long enough for the
kill to land anywhere: before the post is fetched, between journal and \\Seen, in the
middle of a transaction, between a 250 and the journal update.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.listd_env import ListdEnv, make_message
from tests.servers.dovecot import Dovecot
from tests.servers.smtpcapture import SmtpCapture

MEMBERS = 500
BATCH = 10
KILLS = 4
ROUNDS = int(os.environ.get("LISTD_KILL_ROUNDS", "20"))


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_kill_9_during_fan_out_loses_nothing(tmp_path: Path, dovecot: Dovecot,
                                             smtp: SmtpCapture, round_number: int) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed {seed}")
    env = ListdEnv(tmp_path, dovecot, smtp.port,
                   smtp_extra={"max_recipients": BATCH, "connections": 1})
    members = [f"member{i:03d}@example.test" for i in range(MEMBERS)]
    env.subscribe("friends", *members)
    smtp.data_delay = 0.01  # 50 transactions: about 0.5 s of sending plus round trips
    env.post(make_message(sender=members[0]))

    kills = 0
    for _ in range(KILLS):
        daemon = env.start()
        time.sleep(rng.uniform(0.0, 1.0))  # when to kill, not a timing assertion
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        kills += 1
        if env.status()["deliveries_pending"] == 0 and env.status()["deliveries_sent"]:
            break

    sent_before = env.status()["deliveries_sent"]
    env.once()  # a clean run finishes what the killed ones left
    status = env.status()
    assert status["deliveries_sent"] == MEMBERS - 1 and status["deliveries_pending"] == 0

    counts = smtp.recipients_count()
    expected = set(members[1:])  # the author gets no copy
    assert set(counts) == expected, f"seed {seed}: missing {sorted(expected - set(counts))}"
    duplicates = sum(counts.values()) - len(expected)
    print(f"kills {kills}, duplicates {duplicates}, sent before the clean run: {sent_before}")
    # Each kill can cut at most the one transaction in flight (connections: 1).
    assert duplicates <= kills * BATCH, f"seed {seed}: {duplicates} duplicates"

"""listd's main job on a self-contained default, for a person to watch.

Starts a throwaway Dovecot (the list mailbox) and an SMTP capture server on 127.0.0.1,
configures one list with three subscribers, drops a post from Alice into the mailbox,
runs the real ``listd --once``, and prints what each subscriber received.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import sys
import tempfile
from pathlib import Path

from tests.listd_env import ListdEnv, make_message
from tests.servers.dovecot import Dovecot
from tests.servers.smtpcapture import SmtpCapture

SHOWN_FIELDS = ("From", "To", "Reply-To", "Subject", "List-Id", "List-Post",
                "List-Unsubscribe", "Precedence", "X-Original-From")


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def main() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="listd-demo-"))
    with Dovecot() as dovecot, SmtpCapture() as smtp:
        try:
            env = ListdEnv(scratch, dovecot, smtp.port)
            _section(f"config {env.config_path}")
            print(env.config_path.read_text().rstrip())

            _section("listctl subscribe friends ...")
            result = env.listctl("subscribe", "friends", "Zoë Émile <alice@example.test>",
                                 "Bob <bob@example.test>", "carol@example.test")
            print(result.stdout.rstrip() or result.stderr)

            post = make_message(sender="=?utf-8?q?Zo=C3=AB_=C3=89mile?= <alice@example.test>",
                                subject="Re: [friends] Seedlings for the spring swap",
                                body="I have 40 tomato seedlings. Who wants some?\r\n\r\n"
                                     "-- \r\nZoë\r\n".encode())
            dovecot.append("list@example.test", post)
            _section("the post, as it sits in the list mailbox")
            print(post.decode())

            _section("listd --once")
            run = env.listd("--once")
            print(run.stderr.rstrip())
            if run.returncode != 0:
                print(f"listd exited {run.returncode}", file=sys.stderr)
                return run.returncode

            for captured in smtp.messages:
                for rcpt in captured.rcpts:
                    _section(f"received by {rcpt} (envelope from {captured.mail_from})")
                    message = email.message_from_bytes(captured.data,
                                                       policy=email.policy.default)
                    for name in SHOWN_FIELDS:
                        if message[name] is not None:
                            print(f"{name}: {message[name]}")
                    body = captured.data.partition(b"\r\n\r\n")[2]
                    print(f"\n{body.decode('utf-8', 'replace').rstrip()}")
            same = all(m.data.partition(b"\r\n\r\n")[2] == post.partition(b"\r\n\r\n")[2]
                       for m in smtp.messages)
            _section("listctl status")
            print(env.listctl("status").stdout.rstrip())
            print(f"\nbody bytes identical to the original: {same}; the author got no "
                  "copy of her own post.")
            return 0
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

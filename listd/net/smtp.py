"""SMTP adapter: one connection, transactions in, per-recipient outcomes out.

Outcomes are data, ``{recipient: (code, text)}``. Where the server offers PIPELINING
(RFC 2920), MAIL, every RCPT and DATA go out in one write and the message in another: two
round trips per transaction instead of one per recipient. TCP_NODELAY keeps the final
"." from waiting on the peer's delayed ACK.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from listd.config import SmtpConfig
from listd.credentials import Authenticator, AuthError

Outcome = tuple[int, str]


class ConnectionLost(Exception):
    """The connection broke or timed out; what was in flight is unknown."""


def prepare_payload(data: bytes) -> bytes:
    """Message bytes as the DATA payload: CRLF line ends, dot-stuffed, "." terminated.

    Bare LF and CR become CRLF (RFC 5321 §2.3.8 forbids them on the wire); nothing else in
    the message changes.
    """
    lines = data.splitlines()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


@dataclass(frozen=True)
class _Reply:
    code: int
    text: str


def _reply(code: int, message: bytes) -> _Reply:
    return _Reply(code, message.decode("utf-8", "replace").replace("\n", " "))


class SmtpConnection:
    """A signed-in SMTP session, reused for many transactions."""

    def __init__(self, config: SmtpConfig, authenticator: Authenticator | None) -> None:
        self._config = config
        self._authenticator = authenticator
        self._smtp: smtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self._config.ca_file) if self._config.ca_file else None)
        return context

    def open(self) -> None:
        """Connect, secure and sign in. Raises ConnectionLost (transient) or AuthError."""
        cfg = self._config
        try:
            if cfg.tls == "implicit":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                                      context=self._tls_context())
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            self._smtp = smtp
            smtp.ehlo()
            if cfg.tls == "starttls":
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()  # smtplib does not re-EHLO itself; AUTH would 503 silently
            if smtp.sock is not None:
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if cfg.username:
                if self._authenticator is None:
                    raise AuthError("smtp.username is set but no credentials are configured")
                self._authenticator.smtp_login(smtp, cfg.username)
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise ConnectionLost(f"SMTP {cfg.host}:{cfg.port}: {_describe(exc)}") from None
        except AuthError:
            self.close()
            raise

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def send(self, sender: str, recipients: Sequence[str], payload: bytes,
             eight_bit: bool = False) -> dict[str, Outcome]:
        """One transaction. ``payload`` comes from :func:`prepare_payload`.

        Raises ConnectionLost if the connection broke; the caller decides about the batch.
        """
        smtp = self._smtp
        if smtp is None:
            raise ConnectionLost("not connected")
        utf8 = not sender.isascii() or not all(r.isascii() for r in recipients)
        if utf8 and not smtp.has_extn("smtputf8"):
            # Internationalised addresses need SMTPUTF8 (RFC 6531); without it they are
            # undeliverable through this server, the others go as usual.
            refused: dict[str, Outcome] = {
                r: (553, "5.6.7 non-ASCII address and the server offers no SMTPUTF8")
                for r in recipients if not (r.isascii() and sender.isascii())}
            rest = [r for r in recipients if r not in refused]
            return refused | (self.send(sender, rest, payload, eight_bit) if rest else {})
        mail = f"MAIL FROM:<{sender}>"
        if eight_bit and smtp.has_extn("8bitmime"):
            mail += " BODY=8BITMIME"
        if utf8:
            mail += " SMTPUTF8"
        if smtp.has_extn("size"):
            mail += f" SIZE={len(payload)}"
        commands = [mail] + [f"RCPT TO:<{r}>" for r in recipients] + ["DATA"]
        try:
            if smtp.has_extn("pipelining"):
                smtp.send("".join(c + "\r\n" for c in commands).encode("utf-8"))
                replies = [_reply(*smtp.getreply()) for _ in commands]
            else:
                replies = self._one_by_one(smtp, commands)
            return self._finish(smtp, recipients, replies, payload)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            raise ConnectionLost(_describe(exc)) from None

    @staticmethod
    def _one_by_one(smtp: smtplib.SMTP, commands: list[str]) -> list[_Reply]:
        replies: list[_Reply] = []
        for index, command in enumerate(commands):
            smtp.send((command + "\r\n").encode("utf-8"))
            replies.append(_reply(*smtp.getreply()))
            refused_mail = index == 0 and replies[0].code >= 300
            no_recipient = index == len(commands) - 2 and all(
                r.code >= 300 for r in replies[1:])
            if refused_mail or no_recipient:
                # Stop before DATA; answer the rest as the server's refusal would.
                skipped = replies[0] if refused_mail else _Reply(554, "no valid recipients")
                replies.extend(skipped for _ in commands[len(replies):])
                break
        return replies

    @staticmethod
    def _finish(smtp: smtplib.SMTP, recipients: Sequence[str], replies: list[_Reply],
                payload: bytes) -> dict[str, Outcome]:
        mail, rcpts, data = replies[0], replies[1:-1], replies[-1]
        if mail.code >= 300:
            _reset(smtp)
            return {r: (mail.code, mail.text) for r in recipients}
        accepted = [r for r, reply in zip(recipients, rcpts, strict=True) if reply.code < 300]
        outcomes = {r: (reply.code, reply.text)
                    for r, reply in zip(recipients, rcpts, strict=True) if reply.code >= 300}
        if data.code != 354:
            outcomes.update({r: (data.code, data.text) for r in accepted})
            _reset(smtp)
            return outcomes
        if not accepted:
            # The server said 354 although it refused every RCPT: end the empty message.
            smtp.send(b".\r\n")
            smtp.getreply()
            return outcomes
        smtp.send(payload)
        final = _reply(*smtp.getreply())
        outcomes.update({r: (final.code, final.text) for r in accepted})
        return outcomes


def _reset(smtp: smtplib.SMTP) -> None:
    smtp.send("RSET\r\n")
    smtp.getreply()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, smtplib.SMTPException) else f"{type(exc).__name__}: {text}"

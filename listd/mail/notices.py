"""Messages listd writes itself: notices to a refused sender and to the owners.

These are our own messages, so building them with the ``email`` package is fine (unlike
relayed mail). Each is marked ``Auto-Submitted: auto-replied`` (RFC 3834) and carries the
list's ``X-Loop``, so that no well-behaved responder answers it and we never answer an
answer to it.
"""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import dataclass
from email.message import EmailMessage

from listd.config import ListConfig
from listd.mail.rewrite import ListAddresses

_POLICY = email.policy.SMTP.clone(max_line_length=78)


@dataclass(frozen=True)
class Notice:
    """An outgoing message of ours: envelope and bytes, ready for the outbox."""

    recipients: tuple[str, ...]
    data: bytes


def _compose(lst: ListConfig, to: str, subject: str, text: str,
             in_reply_to: str | None, now: float) -> bytes:
    addresses = ListAddresses.of(lst)
    message = EmailMessage(policy=_POLICY)
    message["From"] = email.utils.formataddr((f"{lst.name} (list robot)", addresses.post))
    message["To"] = to
    message["Reply-To"] = addresses.owner
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(now, localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=addresses.post.rpartition("@")[2])
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message["Auto-Submitted"] = "auto-replied"
    message["X-Loop"] = addresses.post
    message.set_content(text)
    return message.as_bytes()


def refusal_notices(lst: ListConfig, sender: str, subject: str, reason: str,
                    message_id: str | None, now: float) -> list[Notice]:
    """The short notice to the refused sender and the report to the owners."""
    shown_subject = subject or "(no subject)"
    notices = [Notice((sender,), _compose(
        lst, sender, f"Your message to {lst.address} was not distributed",
        f"Your message \"{shown_subject}\" to the list {lst.name} <{lst.address}>\n"
        f"was not distributed: {reason}.\n\n"
        f"If you think this is a mistake, write to the list owners at "
        f"{ListAddresses.of(lst).owner}.\n", message_id, now))]
    if lst.owners:
        notices.append(Notice(lst.owners, _compose(
            lst, ", ".join(lst.owners), f"Refused post to {lst.address} from {sender}",
            f"A message to the list {lst.name} <{lst.address}> was refused.\n\n"
            f"From:    {sender}\nSubject: {shown_subject}\nReason:  {reason}\n\n"
            f"The sender was told. Nothing was sent to the members.\n", message_id, now)))
    return notices

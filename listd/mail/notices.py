"""Messages listd writes itself: notices to a refused sender and to the owners.

These are our own messages, so building them with the ``email`` package is fine (unlike
relayed mail). Each is marked ``Auto-Submitted: auto-replied`` (RFC 3834) and carries the
list's ``X-Loop``, so that no well-behaved responder answers it and we never answer an
answer to it.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage

from listd.config import ListConfig
from listd.mail.addresses import is_valid_address
from listd.mail.listaddr import ListAddresses

_POLICY = email.policy.SMTP.clone(max_line_length=78)
_MSG_ID_RE = re.compile(r"<[!-;=?-~]+>")  # printable ASCII, no space, "<" or ">" inside


@dataclass(frozen=True)
class Notice:
    """An outgoing message of ours: envelope and bytes, ready for the outbox."""

    recipients: tuple[str, ...]
    data: bytes


def compose(lst: ListConfig, to: tuple[str, ...], subject: str, text: str,
            in_reply_to: str | None, now: float, reply_to: str | None = None) -> bytes:
    """One message of ours from the list robot; replies go to the owners by default."""
    addresses = ListAddresses.of(lst)
    # An internationalised address goes out with SMTPUTF8 (listd.net.smtp), and in the
    # header it must be raw UTF-8 then: an encoded word is no address.
    utf8 = not all(a.isascii() for a in to)
    message = EmailMessage(policy=_POLICY.clone(utf8=True) if utf8 else _POLICY)
    message["From"] = email.utils.formataddr((f"{lst.name} (list robot)", addresses.post))
    # Address() quotes a local part that needs it: written as is, "a,b@x" reads as two.
    message["To"] = ", ".join(
        str(Address(username=a.rpartition("@")[0], domain=a.rpartition("@")[2])) for a in to)
    message["Reply-To"] = reply_to or addresses.owner
    # Text from the refused message (the author's address) may hold a VT or NEL, which the
    # email package takes for line breaks and refuses in a header.
    message["Subject"] = " ".join(subject.splitlines())
    message["Date"] = email.utils.formatdate(now, localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=addresses.post.rpartition("@")[2])
    # Only a plain "<id>": the email package decodes an "=?...?=" even there, and may then
    # fail to fold the field (a broken Message-ID must not cost the notice).
    if in_reply_to and _MSG_ID_RE.fullmatch(in_reply_to) and "=?" not in in_reply_to:
        message["In-Reply-To"] = message["References"] = in_reply_to
    message["Auto-Submitted"] = "auto-replied"
    message["X-Loop"] = addresses.post
    message.set_content(text)
    return message.as_bytes()


def refusal_notices(lst: ListConfig, sender: str, subject: str, reason: str,
                    message_id: str | None, now: float) -> list[Notice]:
    """The short notice to the refused sender and the report to the owners."""
    shown_subject = subject or "(no subject)"
    notices: list[Notice] = []
    # An author address that is no address (a forged or broken From) gets no notice and
    # stays out of the header fields: no server would take it, and the email package may
    # fail to write it, e.g. one with "=?" it decodes as an encoded word (RFC 2047 forbids
    # those in an address) and then cannot fold.
    usable = is_valid_address(sender) and "=?" not in sender
    if usable:
        notices.append(Notice((sender,), compose(
            lst, (sender,), f"Your message to {lst.address} was not distributed",
            f"Your message \"{shown_subject}\" to the list {lst.name} <{lst.address}>\n"
            f"was not distributed: {reason}.\n\n"
            f"If you think this is a mistake, write to the list owners at "
            f"{ListAddresses.of(lst).owner}.\n", message_id, now)))
    if lst.owners:
        told = "The sender was told." if usable else "The sender address is unusable."
        notices.append(Notice(lst.owners, compose(
            lst, lst.owners,
            f"Refused post to {lst.address} from {sender if usable else 'an unusable address'}",
            f"A message to the list {lst.name} <{lst.address}> was refused.\n\n"
            f"From:    {sender}\nSubject: {shown_subject}\nReason:  {reason}\n\n"
            f"{told} Nothing was sent to the members.\n", message_id, now)))
    return notices

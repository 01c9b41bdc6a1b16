"""What a person asks of a list by email: subscribe, unsubscribe, help, confirm, approve...

Pure. The command is taken from the "+" tag of the address it was sent to
(``list+subscribe@``, ``list+confirm-TOKEN@``), else from the Subject (reply markers
stripped), else from the first lines of the plain-text body. Quoted text (``>``), the
signature (``-- ``) and "On ... wrote:" lines end the search, so a reply that quotes a
confirmation mail is read for what the person wrote, not for what we wrote.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum

from listd.mail.headers import RawMessage, decode_words

TOKEN_RE = re.compile(r"^[a-z2-7]{26}$")
_REPLY_MARKER_RE = re.compile(r"^\s*(?:(?:re|aw|sv|vs|antw|odp|res|fwd?|wg)\s*:\s*)+",
                              re.IGNORECASE)
_BODY_LINES = 5  # a command is in the first few lines; anything later is prose


class Verb(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    HELP = "help"
    CONFIRM = "confirm"  # a subscriber confirms with a token
    APPROVE = "approve"  # an owner approves a held post or a subscription
    DISCARD = "discard"  # an owner discards a held post or rejects a subscription
    UNKNOWN = "unknown"


_WORDS = {
    "subscribe": Verb.SUBSCRIBE, "join": Verb.SUBSCRIBE,
    "unsubscribe": Verb.UNSUBSCRIBE, "leave": Verb.UNSUBSCRIBE, "signoff": Verb.UNSUBSCRIBE,
    "remove": Verb.UNSUBSCRIBE,
    "help": Verb.HELP, "info": Verb.HELP,
    "confirm": Verb.CONFIRM, "approve": Verb.APPROVE, "discard": Verb.DISCARD,
    "reject": Verb.DISCARD,
}
_NEEDS_TOKEN = {Verb.CONFIRM, Verb.APPROVE, Verb.DISCARD}


@dataclass(frozen=True)
class Command:
    verb: Verb
    token: str = ""


def parse_line(text: str) -> Command | None:
    """A command from one line of text, or None if the line is not one."""
    words = text.strip().strip(".!").lower().split()
    if not words or words[0] not in _WORDS:
        return None
    verb = _WORDS[words[0]]
    if verb in _NEEDS_TOKEN:
        token = words[1] if len(words) > 1 else ""
        return Command(verb, token) if TOKEN_RE.match(token) else None
    if verb is Verb.UNSUBSCRIBE and len(words) > 1 and TOKEN_RE.match(words[1]):
        return Command(verb, words[1])  # a member's personal unsubscribe link
    # "subscribe" alone or followed by little else (a name, "me", "please"): a command.
    # A sentence that merely starts with the word is not.
    return Command(verb) if len(words) <= 3 else None


def parse_tag(tag: str) -> Command | None:
    """A command from a "+" address tag: ``subscribe``, ``confirm-TOKEN``..."""
    verb_text, _, token = tag.lower().partition("-")
    return parse_line(f"{verb_text} {token}" if token else verb_text)


def parse_command(message: RawMessage, tag: str = "") -> Command:
    """The command a message to a list's command address carries."""
    if tag:
        found = parse_tag(tag)
        if found:
            return found
    subject = _REPLY_MARKER_RE.sub("", decode_words(message.get("Subject") or ""))
    found = parse_line(subject)
    if found:
        return found
    for line in _first_lines(message):
        found = parse_line(line)
        if found:
            return found
    return Command(Verb.UNKNOWN)


def _first_lines(message: RawMessage) -> list[str]:
    text = _plain_text(message)
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if (line.startswith(">") or line.rstrip() == "--" or line.startswith("-- ")
                or stripped.endswith("wrote:")):
            break
        if stripped:
            lines.append(stripped)
        if len(lines) >= _BODY_LINES:
            break
    return lines


def _plain_text(message: RawMessage) -> str:
    """The first text/plain part, decoded. Reading only: nothing is re-serialised."""
    parsed = email.message_from_bytes(message.serialize(), policy=email.policy.default)
    if not isinstance(parsed, EmailMessage):
        return ""
    part = parsed.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, AttributeError, KeyError):
        return ""
    return content if isinstance(content, str) else ""

"""Mailbox → inbound journal: every message above the checkpoint, exactly once.

Fetching is by UID, not by the \\Seen flag, so a person reading the mailbox in a web
client cannot make listd miss a post. Each batch is journaled together with the new
checkpoint in one transaction, and only then flagged \\Seen. After a UIDVALIDITY change
the UIDs mean nothing any more: messages already journaled are recognised by Message-ID
and Date (or, without a Message-ID, by their bytes), so nothing is sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from listd.config import ImapConfig
from listd.mail.headers import RawMessage
from listd.metrics import Metrics
from listd.net.imap import ImapMailbox
from listd.store import Checkpoint, FetchedMessage, Store, sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeResult:
    fetched: int
    duplicates: int


def message_identity(raw: bytes) -> tuple[str | None, str | None]:
    """(Message-ID, Date) of a message, as written, for duplicate detection."""
    message = RawMessage.parse(raw)
    return message.get("Message-ID"), message.get("Date")


class Intake:
    def __init__(self, store: Store, config: ImapConfig, clock: Callable[[], float],
                 metrics: Metrics | None = None,
                 progress: Callable[[], None] | None = None) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._progress = progress or (lambda: None)  # after every batch journaled

    def start_position(self, mailbox: ImapMailbox) -> None:
        """Reconcile the checkpoint with the folder just selected."""
        folder, state = self._config.folder, mailbox.folder_state
        checkpoint = self._store.checkpoint(folder)
        if checkpoint is None:
            if self._config.initial_sync == "all":
                last = 0
                log.info("first start: processing every message in %s", folder)
            else:
                existing = mailbox.uids_above(0)
                last = existing[-1] if existing else 0
                log.info("first start: %d message(s) already in %s left alone; new mail "
                         "from UID %d on is processed (imap.initial_sync)", len(existing),
                         folder, last + 1)
            self._store.journal_fetched(folder, state.uidvalidity, [],
                                        Checkpoint(state.uidvalidity, last), self._clock())
        elif checkpoint.uidvalidity != state.uidvalidity:
            log.warning("UIDVALIDITY of %s changed from %d to %d: the server renumbered the "
                        "folder; re-reading it and skipping messages already journaled",
                        folder, checkpoint.uidvalidity, state.uidvalidity)
            self._resync(mailbox)

    def _resync(self, mailbox: ImapMailbox) -> None:
        folder, state = self._config.folder, mailbox.folder_state
        uids = mailbox.uids_above(0)
        known: set[int] = set()
        for start in range(0, len(uids), 500):
            headers = mailbox.fetch_headers(uids[start : start + 500])
            for uid, block in headers.items():
                message_id, date = message_identity(block + b"\r\n")
                if message_id and self._store.seen_before(message_id, date):
                    known.add(uid)
        unknown = [uid for uid in uids if uid not in known]
        log.info("resync of %s: %d known, %d new", folder, len(known), len(unknown))
        # Journal the unknown ones under the new UIDVALIDITY; the checkpoint only moves to
        # the top once all are in, so a crash half-way just repeats the resync.
        old = self._store.checkpoint(folder)
        self._journal(mailbox, unknown, keep_checkpoint=old)
        self._store.journal_fetched(folder, state.uidvalidity, [],
                                    Checkpoint(state.uidvalidity, uids[-1] if uids else 0),
                                    self._clock())

    def poll(self, mailbox: ImapMailbox) -> IntakeResult:
        """Journal every message above the checkpoint. Returns how many were new."""
        checkpoint = self._store.checkpoint(self._config.folder)
        last = checkpoint.last_uid if checkpoint else 0
        uids = mailbox.uids_above(last)
        if not uids:
            return IntakeResult(0, 0)
        return self._journal(mailbox, uids, keep_checkpoint=None)

    def _journal(self, mailbox: ImapMailbox, uids: list[int],
                 keep_checkpoint: Checkpoint | None) -> IntakeResult:
        """Fetch, de-duplicate and journal ``uids`` in batches, then flag them \\Seen.

        Each batch moves the checkpoint to its highest UID, unless ``keep_checkpoint`` is
        given (a resync, which moves it only when the whole folder is in).
        """
        folder = self._config.folder
        validity = mailbox.folder_state.uidvalidity
        fetched = duplicates = 0
        for batch in mailbox.fetch(uids, self._config.fetch_batch):
            messages: list[FetchedMessage] = []
            in_batch: set[tuple[str | None, str | None, str]] = set()
            for uid, raw in batch:
                message_id, date = message_identity(raw)
                digest = sha256(raw)
                identity = (message_id, date, "" if message_id else digest)
                if identity in in_batch or self._store.seen_before(message_id, date, digest):
                    duplicates += 1
                    log.info("UID %d is a message already journaled (Message-ID %s); skipped",
                             uid, message_id)
                    continue
                in_batch.add(identity)
                messages.append(FetchedMessage(uid, raw, message_id, date))
            checkpoint = keep_checkpoint or Checkpoint(
                validity, max((uid for uid, _ in batch), default=0))
            self._store.journal_fetched(folder, validity, messages, checkpoint, self._clock())
            self._metrics.fetched_batch(len(batch), len(batch) - len(messages))
            self._progress()
            mailbox.mark_seen([uid for uid, _ in batch])
            fetched += len(messages)
        return IntakeResult(fetched, duplicates)

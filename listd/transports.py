"""The one place where network transports are made, so tests and tools can aim them.

The service asks this factory for a mailbox or an SMTP connection; it never constructs
adapters itself. The configuration already names host and port, so tests usually just
write a config pointing at loopback servers; a subclass can hand out other transports.
"""

from __future__ import annotations

from listd.config import Config
from listd.credentials import Authenticator
from listd.net.imap import ImapMailbox
from listd.net.smtp import SmtpConnection
from listd.signin import make_authenticator


class Transports:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.authenticator: Authenticator = make_authenticator(
            config.auth, config.imap.username, config.state_dir)

    def mailbox(self) -> ImapMailbox:
        return ImapMailbox(self.config.imap, self.authenticator)

    def smtp(self) -> SmtpConnection:
        needs_auth = self.config.smtp.username is not None
        return SmtpConnection(self.config.smtp, self.authenticator if needs_auth else None)

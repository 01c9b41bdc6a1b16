"""listd: mailing lists served from one IMAP mailbox, relayed over SMTP."""

__version__ = "0.1.0"

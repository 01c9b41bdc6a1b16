"""OAuth2 sign-in (XOAUTH2) for IMAP and SMTP: token providers for Microsoft and Google."""

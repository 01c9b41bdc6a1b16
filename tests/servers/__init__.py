"""Throwaway real mail servers (Dovecot, aiosmtpd, smtp-sink) for listd tests."""

"""Pure mail logic: bytes and configuration in, decisions and bytes out. No I/O here."""

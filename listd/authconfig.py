"""The ``auth:`` section: how listd signs in, and where its secrets come from.

Secrets are never in the YAML. Each is a file named by ``*_file`` (not readable by others),
or a systemd credential named by ``*_credential`` (``LoadCredential=`` puts it in
``$CREDENTIALS_DIRECTORY``). Only the path is resolved here; the secret is read at sign-in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from listd.configschema import Key, Reader, check_secret_file, is_loopback

AUTH_METHODS = ("password", "oauth2-microsoft", "oauth2-google")
MICROSOFT_FLOWS = ("app-only", "delegated")

# What each flow asks for when the config names no scopes.
MICROSOFT_APP_SCOPES = ("https://outlook.office365.com/.default",)
MICROSOFT_DELEGATED_SCOPES = ("https://outlook.office.com/IMAP.AccessAsUser.All",
                              "https://outlook.office.com/SMTP.Send")
GOOGLE_SCOPES = ("https://mail.google.com/",)

AUTH_KEYS = {
    "method": Key(str, "password", AUTH_METHODS),
    "password_file": Key(str, None),
    "password_credential": Key(str, None),
    "client_id": Key(str, None),
    "tenant": Key(str, None),
    "flow": Key(str, "app-only", MICROSOFT_FLOWS),
    "client_secret_file": Key(str, None),
    "client_secret_credential": Key(str, None),
    "certificate_file": Key(str, None),
    "certificate_credential": Key(str, None),
    "certificate_thumbprint": Key(str, None),
    "authority": Key(str, "https://login.microsoftonline.com"),
    "token_uri": Key(str, "https://oauth2.googleapis.com/token"),
    "auth_uri": Key(str, "https://accounts.google.com/o/oauth2/v2/auth"),
    "scopes": Key(list, None),
    "ca_file": Key(str, None),
}


@dataclass(frozen=True)
class AuthConfig:
    method: str = "password"
    password_file: Path | None = None  # the password (file or credential)
    client_id: str = ""
    tenant: str = ""
    flow: str = "app-only"
    client_secret_file: Path | None = None
    certificate_file: Path | None = None  # PEM: private key and certificate
    certificate_thumbprint: str = ""
    authority: str = "https://login.microsoftonline.com"
    token_uri: str = "https://oauth2.googleapis.com/token"
    auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    scopes: tuple[str, ...] = ()
    ca_file: Path | None = None  # trust this CA for the token endpoint (private/test IdP)

    @property
    def oauth(self) -> bool:
        return self.method != "password"


def parse_auth(reader: Reader, values: dict[str, Any],
               resolve: Callable[[str | None], Path | None], section_line: int, *,
               service: bool = True) -> AuthConfig:
    lines = values["__lines__"]
    method = values["method"]

    def secret(name: str, required: bool, what: str) -> Path | None:
        file_key, credential_key = f"{name}_file", f"{name}_credential"
        if values[file_key] is not None and values[credential_key] is not None:
            raise reader.error(lines.line_of(credential_key), f"auth.{credential_key}",
                               f"give {file_key} or {credential_key}, not both")
        if values[credential_key] is not None:
            key = credential_key
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory and not service:
                return None  # listctl outside the unit: the secret is the daemon's business
            if not directory:
                raise reader.error(lines.line_of(key), f"auth.{key}",
                                   "no $CREDENTIALS_DIRECTORY: set LoadCredential= in the "
                                   f"unit, or use auth.{file_key}")
            path: Path | None = Path(directory) / values[key]
        else:
            key = file_key
            path = resolve(values[file_key])
        if path is None:
            if required:
                raise reader.error(section_line, f"auth.{file_key}",
                                   f"missing; name the file holding {what} (mode 0600), or "
                                   f"use auth.{credential_key}")
            return None
        problem = check_secret_file(path)
        if problem:
            raise reader.error(lines.line_of(key), f"auth.{key}", problem)
        return path

    def required(key: str, hint: str) -> str:
        if not values[key]:
            raise reader.error(section_line, f"auth.{key}", f"missing; {hint}")
        return str(values[key])

    def endpoint(key: str) -> str:
        url = str(values[key])
        parts = urlsplit(url)
        secure = parts.scheme == "https" or (parts.scheme == "http" and
                                              is_loopback(parts.hostname or ""))
        if not secure or not parts.hostname:
            raise reader.error(lines.line_of(key), f"auth.{key}",
                               f"{url!r} must be an https URL (http only to a loopback host)")
        return url.rstrip("/")

    scopes = values["scopes"]
    if scopes is not None and not all(isinstance(s, str) and s for s in scopes):
        raise reader.error(lines.line_of("scopes"), "auth.scopes", "must be a list of strings")
    ca_file = resolve(values["ca_file"])
    if ca_file is not None and not ca_file.is_file():
        raise reader.error(lines.line_of("ca_file"), "auth.ca_file", f"{ca_file} does not exist")

    if method == "password":
        return AuthConfig(method=method, password_file=secret("password", True,
                                                              "the mailbox password"))
    if method == "oauth2-google":
        return AuthConfig(
            method=method,
            client_id=required("client_id", "the OAuth client id from the Google Cloud console"),
            client_secret_file=secret("client_secret", True, "the OAuth client secret"),
            token_uri=endpoint("token_uri"), auth_uri=endpoint("auth_uri"),
            scopes=tuple(scopes or GOOGLE_SCOPES), ca_file=ca_file)
    flow = values["flow"]
    client_secret = secret("client_secret", False, "the client secret")
    certificate = secret("certificate", False, "the certificate and its private key")
    if certificate is not None and not values["certificate_thumbprint"]:
        raise reader.error(section_line, "auth.certificate_thumbprint",
                           "missing; the SHA-1 thumbprint shown for the certificate in Entra")
    if flow == "delegated" and (client_secret or certificate):
        key = "client_secret" if client_secret else "certificate"
        raise reader.error(lines.line_of(f"{key}_file") or section_line, f"auth.{key}_file",
                           "the delegated flow signs in as a public client (device code) "
                           "and uses no client secret or certificate; remove it")
    if flow == "app-only" and client_secret is None and certificate is None:
        raise reader.error(section_line, "auth.client_secret_file",
                           "app-only sign-in needs client_secret_file (or _credential) or "
                           "certificate_file with certificate_thumbprint")
    default_scopes = MICROSOFT_APP_SCOPES if flow == "app-only" else MICROSOFT_DELEGATED_SCOPES
    return AuthConfig(
        method=method,
        client_id=required("client_id", "the application (client) id of the Entra app"),
        tenant=required("tenant", "the directory (tenant) id or domain"),
        flow=flow, client_secret_file=client_secret, certificate_file=certificate,
        certificate_thumbprint=values["certificate_thumbprint"] or "",
        authority=endpoint("authority"), scopes=tuple(scopes or default_scopes),
        ca_file=ca_file)

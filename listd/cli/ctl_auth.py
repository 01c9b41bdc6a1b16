"""``listctl auth login`` and ``listctl auth status``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from listd import config
from listd.cli.common import EX_NOPERM, EX_OK, EX_UNAVAILABLE
from listd.cli.ctl_base import Commands, emit, iso
from listd.credentials import AuthError
from listd.oauth.google import TOKEN_NAME
from listd.oauth.login import login_google, login_microsoft
from listd.oauth.microsoft import CACHE_NAME, cache_accounts
from listd.oauth.provider import TokenEndpointError
from listd.store import Store


def register(commands: Commands) -> None:
    auth = commands.add("auth", "OAuth2 sign-in: login, status", run,
                        description="OAuth2 sign-in for Microsoft 365 and Google.")
    actions = auth.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    actions.add_parser("login", help="sign in once (device code for Microsoft, consent URL "
                       "for Google) and save the result in the state directory")
    status = actions.add_parser("status", help="the saved sign-in and the token's state")
    status.add_argument("--json", action="store_true", help="one JSON record per line")


def run(cfg: config.Config, store: Store, args: argparse.Namespace) -> int:
    if args.auth_command == "status":
        return _status(cfg, store, args.json)
    auth = cfg.auth
    if not auth.oauth:
        print("listctl: auth.method is password: there is nothing to sign in to",
              file=sys.stderr)
        return EX_OK
    try:
        if auth.method == "oauth2-microsoft":
            result = login_microsoft(auth, cfg.imap.username, cfg.state_dir,
                                     lambda text: print(text, flush=True))
        else:
            result = login_google(auth, cfg.imap.username, cfg.state_dir, _ask)
    except AuthError as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return EX_NOPERM
    except TokenEndpointError as exc:
        print(f"listctl: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(result)
    return EX_OK


def _ask(prompt: str) -> str:
    print(prompt, end="", flush=True)
    return sys.stdin.readline()


def _status(cfg: config.Config, store: Store, as_json: bool) -> int:
    values = store.status_values()
    record: dict[str, Any] = {"method": cfg.auth.method, "username": cfg.imap.username}
    if cfg.auth.method == "oauth2-microsoft":
        record["flow"] = cfg.auth.flow
        record["signed_in"] = cache_accounts(cfg.state_dir / CACHE_NAME)
    elif cfg.auth.method == "oauth2-google":
        record["signed_in"] = (cfg.state_dir / TOKEN_NAME).exists()
    expires = values.get("token_expires_at")
    record["token_expires_at"] = iso(float(expires)) if expires else None
    record["token_valid_for_s"] = round(float(expires) - time.time()) if expires else None
    record["token_refresh_failures"] = int(values.get("token_refresh_failures") or 0)
    record["problem"] = values.get("token_problem") or values.get("imap_problem") or None
    emit([record], as_json, lambda r: "\n".join(
        f"{k}: {'-' if v is None else v}" for k, v in r.items()))
    return EX_OK

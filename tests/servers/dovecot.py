"""A throwaway Dovecot 2.3 instance on 127.0.0.1 (testbed §1 and §7).

Everything (config, sockets, state, mail, log) lives in one scratch directory;
nothing in /etc/dovecot or /run/dovecot is read or touched. Every Dovecot tool
therefore gets ``-c <conf>``, otherwise it would use the system config.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from imapclient import IMAPClient

from .certs import make_cert
from .managed import Managed
from .ports import HOST, free_port, wait_for_port, wait_for_port_closed

DEFAULT_USERS: Mapping[str, str] = {
    "list@example.test": "listpw",
    "alice@example.test": "alicepw",
    "bob@example.test": "bobpw",
}

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


class MailboxStatus(NamedTuple):
    uidvalidity: int
    uidnext: int


def normalise_message(raw: bytes) -> bytes:
    """Make ``raw`` a valid RFC 5322 message for IMAP/LMTP.

    Drops a leading mbox ``From `` separator line (test fixtures are often
    saved from mbox files) and turns bare LF or bare CR into CRLF, so what
    Dovecot returns on FETCH is byte-identical to what was stored.
    """
    lines = raw.splitlines()
    if lines and lines[0].startswith(b"From "):
        lines = lines[1:]
    return b"".join(line + b"\r\n" for line in lines)


def _mail_user() -> tuple[str, str]:
    """User/group for Dovecot's unprivileged processes.

    Mail processes can never run as uid 0 (hard-coded in Dovecot), so as root
    they run as nobody; when we are not root, Dovecot runs "rootless" and all
    its processes must be the running user.
    """
    pw = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    return pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name


class Dovecot(Managed):
    """Dovecot with IMAP (plain + STARTTLS), IMAPS and LMTP on free loopback ports."""

    host = HOST

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        cert: tuple[Path, Path] | None = None,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        """``oauth2_introspection_url``: also offer XOAUTH2 and OAUTHBEARER,
        valid when an RFC 7662 POST ``token=...`` to this URL answers
        ``{"active": true, "email": <login user>}`` (testbed §2). The server
        behind it must outlive this Dovecot. Password logins keep working.
        """
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        for user, password in self.users.items():
            # passwd-file is colon-separated; a colon would silently corrupt it
            if ":" in user + password:
                raise ValueError(f"':' not allowed in passwd-file entry {user!r}")
        # Not pytest's tmp_path: its 0700 directories block the nobody-owned
        # mail processes (testbed §1.7).
        self.dir = Path(tempfile.mkdtemp(prefix="listd-dovecot-"))
        self.dir.chmod(0o755)
        self.cert, self.key = cert if cert is not None else make_cert(self.dir / "tls")
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.lmtp_port = free_port()
        self.conf = self.dir / "dovecot.conf"
        self.log_path = self.dir / "dovecot.log"
        self.mail_dir = self.dir / "mail"
        self.oauth2_introspection_url = oauth2_introspection_url
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # ----------------------------------------------------------------- config
    @property
    def cafile(self) -> Path:
        """CA file for clients: the self-signed server certificate itself."""
        return self.cert

    def _write_config(self) -> None:
        user, group = _mail_user()
        d = self.dir
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(exist_ok=True)
        (d / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items())
        )
        mechanisms = "plain login"
        passwd_mechanisms = oauth2_passdb = ""
        if self.oauth2_introspection_url is not None:
            mechanisms += " xoauth2 oauthbearer"
            # a bearer token must never be compared to a password
            passwd_mechanisms = "\n  mechanisms = plain login"
            oauth2_conf = d / "dovecot-oauth2.conf.ext"
            # Dovecot POSTs token=<token> and requires email == the login user.
            # No auth cache is configured, so every login is introspected and a
            # revoked or expired token fails at once.
            oauth2_conf.write_text(f"""\
introspection_mode = post
introspection_url = {self.oauth2_introspection_url}
username_attribute = email
active_attribute = active
active_value = true
timeout_msecs = 3000
""")
            oauth2_passdb = f"""\
# XOAUTH2 / OAUTHBEARER validated by RFC 7662 token introspection
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2_conf}
}}
"""
        self.conf.write_text(f"""\
# throwaway Dovecot instance for listd tests, everything under {d}
instance_name = listd-test-{self.imap_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {self.log_path}
protocols = imap lmtp
listen = {HOST}
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
mail_uid = {user}
mail_gid = {group}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{d}/mail/%u/Maildir
mail_home = {d}/mail/%u
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}
passdb {{
  driver = passwd-file{passwd_mechanisms}
  args = scheme=PLAIN username_format=%u {d}/users
}}
{oauth2_passdb}# passwd-file userdb, not static: unknown LMTP recipients get 550 at RCPT
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.imaps_port}
    ssl = yes
  }}
  chroot =
}}
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {self.lmtp_port}
  }}
}}
# mode 0 disables the per-IP failed-login penalty (0.5, 4.5, 8.5, 15.5 s ...);
# costs one harmless "anvil-auth-penalty ... Connection refused" Error log line
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  # listd plus the test helpers open many connections from 127.0.0.1
  mail_max_userip_connections = 100
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
}}
""")
        if os.geteuid() == 0:
            pw = pwd.getpwnam(user)
            os.chown(self.mail_dir, pw.pw_uid, pw.pw_gid)

    # -------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> float:
        """Start in the foreground as our child; return seconds until IMAP listened."""
        if self.running:
            raise RuntimeError("Dovecot already running")
        # -F keeps the master as our child, so we own its PID and reap it
        # ourselves (a daemonised master is re-parented to PID 1, testbed §1.2).
        # Early fatal errors go to stderr before log_path is opened; the child
        # keeps its own copy of the file descriptor.
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            took = wait_for_port(self.imap_port, self._proc, timeout, log_path=self.log_path)
            for port in (self.imaps_port, self.lmtp_port):
                wait_for_port(port, self._proc, timeout, log_path=self.log_path)
        except BaseException:
            self.stop()
            raise
        return took

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our own master PID and wait; SIGKILL only if it hangs."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            # Session processes outlive the master (they are re-parented and
            # keep serving open connections); a stopped server must drop its
            # clients, as a real restart does, so end them too. They are ours:
            # found by this instance's process title.
            self._end_sessions(timeout)
            # Make sure nothing of this instance still answers, so a restart
            # on the same ports cannot be confused with the old instance.
            for port in (self.imap_port, self.imaps_port, self.lmtp_port):
                wait_for_port_closed(port, timeout)

    def _end_sessions(self, timeout: float) -> None:
        title = f"dovecot-listd-test-{self.imap_port}/".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "cmdline").read_bytes().startswith(title):
                    pids.append(int(entry.name))
            except OSError:
                continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.01)

    def restart(self, timeout: float = 10.0) -> float:
        """Stop and start again on the same ports with the same mail."""
        self.stop(timeout)
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop and delete the scratch directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---------------------------------------------------------------- doveadm
    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <conf> ARGS``; return stdout, raise with stderr on failure."""
        r = subprocess.run(["doveadm", "-c", str(self.conf), *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} -> rc {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def set_uidvalidity(self, user: str, value: int, folder: str = "INBOX") -> None:
        """Force a UIDVALIDITY change. A client with the mailbox selected gets
        BYE on its next command (nothing while in IDLE), testbed §1.5."""
        self.doveadm("mailbox", "update", "--uid-validity", str(value), "-u", user, folder)

    def mailbox_status(self, user: str, folder: str = "INBOX") -> MailboxStatus:
        out = self.doveadm(
            "-f", "flow", "mailbox", "status", "-u", user, "uidvalidity uidnext", folder
        )
        # flow format: "INBOX uidnext=2 uidvalidity=1796402339"
        fields = dict(re.findall(r"\b(uidvalidity|uidnext)=(\d+)", out))
        return MailboxStatus(int(fields["uidvalidity"]), int(fields["uidnext"]))

    def reset(self, users: Iterable[str] | None = None, timeout: float = 10.0) -> None:
        """Give ``users`` (default: all) brand-new empty mailboxes.

        Deleting the whole mail home (rather than expunging) also removes other
        folders and any forced UIDVALIDITY, so each test starts from scratch.
        Open sessions for these users are kicked, and their processes waited
        for, first, so no dying process writes into the fresh directory.
        Dovecot recreates the mailbox on next use.
        """
        for user in list(self.users if users is None else users):
            if self.running:
                self._kick(user, timeout)
            shutil.rmtree(self.mail_dir / user, ignore_errors=True)

    def _kick(self, user: str, timeout: float) -> None:
        out = self.doveadm("-f", "tab", "who", "-1", user)
        pids = [int(line.split("\t")[2]) for line in out.splitlines()[1:] if line.strip()]
        if not pids:
            return
        # rc 68 = "no users kicked": the sessions ended by themselves meanwhile
        r = subprocess.run(
            ["doveadm", "-c", str(self.conf), "kick", user], capture_output=True, text=True
        )
        if r.returncode not in (0, 68):
            raise RuntimeError(f"doveadm kick {user} -> rc {r.returncode}: {r.stderr.strip()}")
        deadline = time.monotonic() + timeout
        for pid in pids:  # Dovecot's processes; we only look, never signal them
            while Path(f"/proc/{pid}").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{user}: session pid {pid} still alive after kick")
                time.sleep(0.01)

    # ------------------------------------------------------------------- IMAP
    @contextmanager
    def imap(self, user: str) -> Iterator[IMAPClient]:
        """Logged-in IMAPClient over the plain port (test helper, not listd)."""
        client = IMAPClient(self.host, port=self.imap_port, ssl=False, timeout=10)
        try:
            client.login(user, self.users[user])
            yield client
        finally:
            try:
                client.logout()
            except Exception:  # connection may already be gone (e.g. BYE)
                client.shutdown()

    def append(
        self,
        user: str,
        raw: bytes,
        folder: str = "INBOX",
        flags: Sequence[bytes | str] = (),
    ) -> int:
        """APPEND a message (creating ``folder`` if needed); return its new UID."""
        with self.imap(user) as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            resp = c.append(folder, normalise_message(raw), flags=tuple(flags))
        m = _APPENDUID.search(resp)
        if m is None:
            raise RuntimeError(f"no APPENDUID in APPEND response {resp!r}")
        return int(m.group(2))

    def uids(self, user: str, folder: str = "INBOX") -> list[int]:
        with self.imap(user) as c:
            c.select_folder(folder, readonly=True)
            return sorted(int(u) for u in c.search("ALL"))

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> set[bytes]:
        """Stored flags of one message. \\Recent is dropped: it belongs to
        whichever session saw the message first, not to the message."""
        with self.imap(user) as c:
            c.select_folder(folder, readonly=True)
            data = c.get_flags([uid])
        if uid not in data:
            raise KeyError(f"{user} {folder}: no UID {uid}")
        return {f.encode() if isinstance(f, str) else f for f in data[uid]} - {b"\\Recent"}

    def fetch(self, user: str, uid: int, folder: str = "INBOX") -> bytes:
        """Full raw message; BODY.PEEK so reading it does not set \\Seen."""
        with self.imap(user) as c:
            c.select_folder(folder, readonly=True)
            data = c.fetch([uid], ["BODY.PEEK[]"])
        if uid not in data:
            raise KeyError(f"{user} {folder}: no UID {uid}")
        body = data[uid][b"BODY[]"]
        assert isinstance(body, bytes)
        return body

    def add_flags(
        self,
        user: str,
        uids: Iterable[int],
        flags: Iterable[bytes | str],
        folder: str = "INBOX",
    ) -> None:
        """Set flags from a separate session, as a person in a web client would."""
        with self.imap(user) as c:
            c.select_folder(folder)
            c.add_flags(list(uids), list(flags))

    # ------------------------------------------------------------------- LMTP
    def deliver_lmtp(
        self,
        rcpt: str | Sequence[str],
        raw: bytes,
        mail_from: str = "sender@example.test",
    ) -> None:
        """Deliver over LMTP, one recipient per transaction.

        With several recipients in one transaction LMTP answers once per
        recipient after DATA, smtplib reads only the first reply and later
        fails at QUIT with SMTPResponseException(250) (testbed §1.3).
        """
        rcpts = [rcpt] if isinstance(rcpt, str) else list(rcpt)
        msg = normalise_message(raw)
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=10) as lmtp:
            for r in rcpts:
                lmtp.sendmail(mail_from, [r], msg)

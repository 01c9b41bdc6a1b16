"""``listctl`` run as root: never leave files behind that the daemon cannot open.

The database, its WAL files and ``secret.key`` are created by whoever opens the store
first. If root did that in a state directory the daemon (``User=listd``) owns, the daemon
could no longer write its own database. So, as root:

- the state directory exists and another user owns it: become that user (its owner and
  group) before anything is opened;
- it exists and root owns it: stay root (a root-run daemon, or a test);
- it does not exist: creating it as root would make it root's, so refuse (exit 77),
  unless only root could ever reach it anyway (an existing parent directory owned by root
  and closed to everyone else, as a private temporary directory is).
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from listd.cli.common import EX_NOPERM
from listd.cli.ctl_base import Failure

HINT = "run as the listd user: sudo -u listd listctl ..."


def become_state_owner(state_dir: Path) -> None:
    """Switch to the owner of ``state_dir`` when running as root; Failure(77) if unsafe."""
    if os.geteuid() != 0:
        return
    try:
        info = state_dir.stat()
    except FileNotFoundError:
        if only_root_reaches(state_dir):
            return
        raise Failure(f"the state directory {state_dir} does not exist yet, and if root "
                      f"created it the daemon could not use it; {HINT}", EX_NOPERM) from None
    except OSError:
        return  # opening the store reports it
    if info.st_uid == 0:
        return
    try:
        try:
            os.initgroups(pwd.getpwuid(info.st_uid).pw_name, info.st_gid)
        except KeyError:  # no passwd entry for the owner: no supplementary groups then
            os.setgroups([])
        os.setgid(info.st_gid)
        os.setuid(info.st_uid)
    except OSError as exc:
        raise Failure(f"cannot become uid {info.st_uid}, the owner of {state_dir}: "
                      f"{exc.strerror}; {HINT}", EX_NOPERM) from None


def only_root_reaches(path: Path) -> bool:
    """Whether an existing parent of ``path`` is root's and not searchable by others."""
    for parent in Path(os.path.abspath(path)).parents:
        try:
            info = parent.stat()
        except OSError:
            continue
        if info.st_uid == 0 and not info.st_mode & (stat.S_IXGRP | stat.S_IXOTH):
            return True
    return False

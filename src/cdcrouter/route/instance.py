"""Who this router instance is: a stable, unique id per replica, and a guard against two on one host.

The instance id names the lanes' ``transactional.id``: a restarted instance with the same id aborts
its predecessor's open transaction at once (``init_transactions``), while two live instances with
one id fence each other until the router gives up. The default is the host name: unique per
machine, and stable across restarts for a Kubernetes StatefulSet pod (``router-0``, ...). Two
routers on one host without their own ids would share it, so each instance holds a lock file for
its (group, id) while it runs and a second one is refused at once with a clear error. The lock
files live in the state directory (see :func:`lock_dir`), not in /tmp, where every run left one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import tempfile
from pathlib import Path

from cdcrouter.config.connections import DEFAULT_STATE_DIR
from cdcrouter.errors import RouteError

__all__ = ["InstanceLock", "default_instance_id", "lock_dir"]


def lock_dir() -> Path:
    """Where the instance lock files live: ``$CDCROUTER_STATE_DIR/locks`` when that is set, else
    ``$XDG_RUNTIME_DIR/cdcrouter`` (per user, cleared at logout), else ``.cdcrouter/locks``. The
    temp directory only when none of these can be created (a read-only root file system, as in the
    Helm chart, whose /tmp is the pod's own emptyDir)."""
    state, runtime = os.environ.get("CDCROUTER_STATE_DIR"), os.environ.get("XDG_RUNTIME_DIR")
    if state:
        path = Path(state) / "locks"
    elif runtime:
        path = Path(runtime) / "cdcrouter"
    else:
        path = Path(DEFAULT_STATE_DIR) / "locks"
    with contextlib.suppress(OSError):  # read-only: the temp directory below
        path.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and os.access(path, os.W_OK):
        return path.resolve()  # one path per directory, whatever the working directory
    return Path(tempfile.gettempdir())


def default_instance_id() -> str:
    """The host name (a StatefulSet pod's name), or ``CDCROUTER_INSTANCE_ID`` when set."""
    return os.environ.get("CDCROUTER_INSTANCE_ID") or socket.gethostname() or "0"


class InstanceLock:
    """An exclusive ``flock`` on a per-(group, instance id) file in :func:`lock_dir`, held while the
    router runs; the kernel drops it when the process dies, so a killed router never blocks its
    restart. The file is never unlinked: a process could hold a lock on an unlinked inode while the
    next one locks a new file of the same name, and both would run."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, group: str, instance_id: str) -> InstanceLock:
        digest = hashlib.sha256(f"{group}\0{instance_id}".encode()).hexdigest()[:16]
        path = lock_dir() / f"cdcrouter-router-{digest}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RouteError(
                f"another router on this host already runs as instance {instance_id!r} in group "
                f"{group!r} ({holder}); two instances with one id would fence each other's transactions",
                hint="give each instance its own --instance-id (or CDCROUTER_INSTANCE_ID), stable across "
                "its restarts; on Kubernetes run a StatefulSet and keep the default (the pod name)",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops the flock
            self._fd = -1

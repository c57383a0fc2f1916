"""Who this router instance is: a stable, unique id per replica, and a guard against two on one host.

The instance id names the lanes' ``transactional.id``: a restarted instance with the same id aborts
its predecessor's open transaction at once (``init_transactions``), while two live instances with
one id fence each other until the router gives up. The default is the host name: unique per
machine, and stable across restarts for a Kubernetes StatefulSet pod (``router-0``, ...). Two
routers on one host without their own ids would share it, so each instance holds a lock file for
its (group, id) while it runs and a second one is refused at once with a clear error.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
from pathlib import Path

from cdcrouter.errors import RouteError

__all__ = ["InstanceLock", "default_instance_id"]


def default_instance_id() -> str:
    """The host name (a StatefulSet pod's name), or ``CDCROUTER_INSTANCE_ID`` when set."""
    return os.environ.get("CDCROUTER_INSTANCE_ID") or socket.gethostname() or "0"


class InstanceLock:
    """An exclusive ``flock`` on a per-(group, instance id) file in the temp directory, held while the
    router runs; the kernel drops it when the process dies, so a killed router never blocks its
    restart."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, group: str, instance_id: str) -> InstanceLock:
        digest = hashlib.sha256(f"{group}\0{instance_id}".encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"cdcrouter-router-{digest}.lock"
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

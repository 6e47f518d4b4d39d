"""Whether a process still runs: how a lock or staging folder left by a killed run is told
from one a live process holds."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only the existence and permission checks
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True

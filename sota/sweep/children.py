"""The sweep's running points on record (`children/` of the sweep directory): each point's process group,
recognised again after a crash by its start time and boot id, and killed before any relaunch."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sota.sweep.sweepdir import SweepDirError
from sota.utils.io import atomic_write_json

log = logging.getLogger(__name__)

def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards); empty when there is no such
    process or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return []
    return stat.rsplit(")", 1)[-1].split()  # the command name before ")" may hold spaces


def start_time(pid: int) -> str | None:
    """When process `pid` started (field 22 of /proc/<pid>/stat, clock ticks since boot), or None when there
    is no such process or no /proc. With the pid it names one process: a pid is recycled, this pair is not."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may stay a zombie until its new parent reaps it)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _same_process(record: Mapping[str, Any]) -> bool:
    """The process a record names is still the one running under its pid (same host, boot and start time)."""
    pid, started = record.get("pid"), record.get("start")
    return (isinstance(pid, int) and started is not None and record.get("host") == socket.gethostname()
            and record.get("boot") == _boot_id() and start_time(pid) == started)


class ChildrenError(SweepDirError):
    """The sweep dir's points are being run by another driver that is still alive."""


class Children:
    """The point processes a sweep is running, one file each in `<sweep_dir>/children/<point id>.json` (pid and
    process group, start time, host, command, and the driver's own pid and start time), removed when the
    process ends. A driver killed with SIGKILL cannot take its points down, so the next driver on the same
    sweep dir does it (`kill_leftovers`) before it launches anything."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, point_id: str) -> Path:
        return self.folder / f"{point_id}.json"

    @staticmethod
    def write(path: Path, pid: int, cmd: Sequence[str]) -> None:
        me = os.getpid()
        atomic_write_json(path, {"pid": pid, "pgid": pid, "start": start_time(pid), "host": socket.gethostname(),
                                 "boot": _boot_id(), "cmd": list(cmd),
                                 "driver": {"pid": me, "start": start_time(me), "host": socket.gethostname(),
                                            "boot": _boot_id()}})

    def records(self) -> list[tuple[Path, dict[str, Any] | None]]:
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                record = None
            out.append((path, record if isinstance(record, dict) else None))
        return out

    def check_no_live_driver(self) -> None:
        """Refuse a sweep dir whose recorded points belong to a driver still running (not this process): two
        drivers would launch the same points, and killing its points would break a sweep that is fine."""
        for path, record in self.records():
            driver = (record or {}).get("driver") or {}
            if driver.get("pid") != os.getpid() and _same_process(driver):
                raise ChildrenError(
                    f"{self.folder.parent} is being run by another sweep.py (pid {driver['pid']}, still alive; "
                    f"it runs the point of {path}). Stop it first, or choose another sweep_dir=...")

    def kill_leftovers(self, wait_s: float = 10.0) -> list[str]:
        """Kill the process group of every recorded point process that is still running (an earlier driver
        died without taking it down), wait until they are gone, and clear the records. Returns what was killed,
        one line each."""
        killed: list[tuple[int, str]] = []
        for path, record in self.records():
            point = path.stem
            if record is None:
                log.warning("%s is unreadable: its process, if any, cannot be identified and is left alone", path)
            elif record.get("host") != socket.gethostname():  # kept: only a resume there can tell
                log.warning("point %s: its process %s was started on host %s, not here: left alone, and its record "
                            "%s kept; if that process still runs, stop it there", point, record.get("pid"),
                            record.get("host"), path)
                continue
            elif _same_process(record):
                pgid = int(record.get("pgid") or record["pid"])
                line = (f"point {point}: killed process group {pgid} ({_short_cmd(record.get('cmd'))}), left "
                        f"running by an earlier sweep driver (pid {(record.get('driver') or {}).get('pid')})")
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError) as err:
                    line += f"; kill failed: {err}"
                log.warning("%s", line)
                killed.append((int(record["pid"]), line))
            elif isinstance(record.get("pid"), int) and _running(record["pid"]):
                log.info("point %s: pid %s now belongs to another process (its start time differs): left alone",
                         point, record.get("pid"))
            path.unlink(missing_ok=True)
        _wait_gone([pid for pid, _ in killed], wait_s)
        return [line for _, line in killed]


def _short_cmd(cmd: Any, chars: int = 200) -> str:
    text = " ".join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd)
    return text if len(text) <= chars else text[:chars] + " ..."


def _wait_gone(pids: Sequence[int], wait_s: float) -> None:
    """Until the killed processes are gone: a relaunched point must not share its dir with a dying one."""
    deadline = time.monotonic() + wait_s
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in (p for p in pids if _running(p)):
        log.warning("process %d is still alive %.0f s after SIGKILL", pid, wait_s)

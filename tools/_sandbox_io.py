"""Reading a running sandbox: output capture with head and tail, limits, status (private)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrl.tools.sandbox import SandboxLimits


def kill_uid(uid: int) -> int:
    """SIGKILL every process of a sandbox uid; return how many there were."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)
                    n += 1
            except OSError:
                continue
    return n


def wait_gone(uid: int, timeout: float = 2.0) -> bool:
    """Kill and wait until no process of ``uid`` is left (a killed task closes its pipes a
    moment before it disappears); False if some survive ``timeout``."""
    deadline = time.monotonic() + timeout
    while kill_uid(uid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Capture:
    """The head and the tail of one output stream, and how many bytes it wrote in all."""

    def __init__(self, keep: int) -> None:
        self.keep_head, self.keep_tail = keep // 2, keep - keep // 2
        self.head, self.tail = bytearray(), bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.keep_head - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > 2 * self.keep_tail:
            del self.tail[: -self.keep_tail]

    def text(self) -> str:
        tail = bytes(self.tail[-self.keep_tail :]) if self.keep_tail else b""
        dropped = self.total - len(self.head) - len(tail)
        head = self.head.decode("utf-8", "replace")
        if dropped <= 0:
            return (bytes(self.head) + tail).decode("utf-8", "replace")
        return f"{head}\n...[{dropped:,} bytes truncated]...\n{tail.decode('utf-8', 'replace')}"


class Collector:
    """Reads a running sandbox's stdout, stderr and status pipes and enforces the limits."""

    def __init__(self, proc: subprocess.Popen[bytes], status_fd: int, limits: SandboxLimits,
                 cleanup_uid: int | None) -> None:
        self.proc, self.limits, self.cleanup_uid = proc, limits, cleanup_uid
        self.out, self.err = Capture(limits.max_output_bytes), Capture(limits.max_output_bytes)
        self.status_fd, self.status_raw = status_fd, bytearray()
        self.killed_for: str | None = None
        self.cleaned = False
        self.warnings: list[str] = []

    def feed(self, job: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(job)
            self.proc.stdin.close()
        except BrokenPipeError:  # the sandbox died before reading its job: the status says why
            pass

    def kill(self, reason: str | None) -> None:
        if reason is not None and self.killed_for is None:
            self.killed_for = reason
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cleanup_uid is not None:
            kill_uid(self.cleanup_uid)

    def run(self, deadline: float) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ, self.out)
        sel.register(self.proc.stderr.fileno(), selectors.EVENT_READ, self.err)
        sel.register(self.status_fd, selectors.EVENT_READ, None)
        hard_stop = deadline + 5.0  # after a kill, pipes close within moments
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline and self.killed_for is None:
                self.kill("timeout")
            if now >= hard_stop:
                break
            status_done = self.status_fd not in sel.get_map()
            if status_done and not self.cleaned and self.proc.poll() is not None:
                self.kill(None)  # the program is done: nothing it started may linger
                self.cleaned = True
            wait = (hard_stop if self.killed_for else deadline) - now
            for key, _ in sel.select(timeout=max(0.0, min(wait, 0.05 if status_done else wait))):
                self._read(sel, key)
        sel.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill(None)
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()

    def _read(self, sel: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        data = os.read(key.fd, 1 << 16)
        if not data:
            sel.unregister(key.fd)
        elif key.data is None:
            self.status_raw += data
        else:
            key.data.add(data)
            if self.out.total + self.err.total > self.limits.kill_output_bytes:
                self.kill("output_limit")

    def outcome(self) -> dict[str, Any]:
        """The fields of a ``SandboxResult`` (all but isolation, limits and wall time)."""
        try:
            status = json.loads(self.status_raw) if self.status_raw else None
        except ValueError:
            status = None
        stdout, stderr = self.out.text(), self.err.text()
        rc = None if status is None else status.get("returncode")
        cpu = float((status or {}).get("cpu_s", 0.0))
        message = ""
        if self.killed_for is not None:
            kind = self.killed_for
        elif status is None or "setup_error" in status:
            kind = "sandbox_error"
            message = (status or {}).get("setup_error") or (
                f"the sandbox exited with status {self.proc.returncode}: {stderr.strip()[-500:]}")
        elif rc == 127 and stderr.startswith("agentrl-sandbox:"):
            kind, message = "sandbox_error", stderr.strip().removeprefix("agentrl-sandbox: ")
        elif rc == 0:
            kind = "ok"
        elif rc is not None and rc > 0:
            kind = "error"
        else:
            cpu_signal = rc in (-signal.SIGXCPU, -signal.SIGKILL) and cpu >= self.limits.cpu_s - 0.5
            kind = "cpu_limit" if cpu_signal else "killed"
        return {
            "status": kind, "returncode": rc, "stdout": stdout, "stderr": stderr,
            "stdout_bytes": self.out.total, "stderr_bytes": self.err.total, "cpu_s": cpu,
            "message": message,
            "warnings": [*(status or {}).get("warnings", []), *self.warnings],
        }

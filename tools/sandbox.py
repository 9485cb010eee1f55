"""Run untrusted Python in a sandbox: one fresh subprocess per call, isolated and limited.

What holds where (measured outcomes in ``docs/sandbox.md``):

``namespaces`` (Linux, running as root, ``unshare`` available: this machine and CI)
    New PID, mount, network, IPC and UTS namespaces. Every mount is read-only and ``nosuid``;
    the working directory lives on a fresh size-limited ``tmpfs`` at ``/tmp`` (the host's
    ``/tmp`` is hidden). The program runs as a random unused uid (so ``RLIMIT_NPROC`` counts only
    its own processes: a fork bomb stops at ``max_processes``), with an empty capability
    bounding set and ``no_new_privs``. The network namespace has only a downed loopback. When
    the program exits or is killed, the namespace's init exits and the kernel kills every
    process left behind.
``userns`` (Linux, not root, unprivileged user namespaces allowed)
    The same namespaces and mounts inside a user namespace; the program keeps the caller's uid
    (mapped to 0, with no capabilities), so it can read what the caller can read.
``rlimits`` (anything else: macOS, containers without ``unshare``)
    Resource limits, a clean environment, a fresh temporary directory and process-group kill
    only: no network or filesystem isolation. As root it still runs as a random uid.

Every isolation level: a wall-clock timeout, CPU-time (``RLIMIT_CPU``), address-space
(``RLIMIT_AS``), file-size, open-file and process limits, an environment that holds nothing of
the caller's (no secrets), stdin from ``/dev/null``, and output that is truncated (head and tail
kept) and stops the program once it passes ``kill_output_bytes``.

Example:
    >>> result = run_python("print(sum(range(10)))")
    >>> result.status, result.stdout
    ('ok', '45\\n')
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentrl.tools._sandbox_io import Collector, wait_gone
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SandboxLimits", "SandboxResult", "available_isolation", "run_python"]

Isolation = Literal["namespaces", "userns", "rlimits"]
SandboxStatus = Literal[
    "ok", "error", "timeout", "cpu_limit", "output_limit", "killed", "sandbox_error"
]
ISOLATIONS: tuple[str, ...] = ("auto", "namespaces", "userns", "rlimits")
_INIT = str(Path(__file__).with_name("_sandbox_init.py"))
_NS_FLAGS = ["--fork", "--kill-child", "--pid", "--mount-proc", "--net", "--mount", "--ipc", "--uts"]
_NS_WORKDIR = "/tmp/work"
_HIDE = ("/root", "/home")  # secrets live in home directories: ssh keys, tokens, caches
_UID_RANGE = (1_000_000_000, 2_000_000_000)  # far above any real account
_SLOTS = threading.BoundedSemaphore(int(os.environ.get("AGENTRL_SANDBOX_CONCURRENCY", "0"))
                                    or max(2, os.cpu_count() or 2))


class SandboxLimits(BaseModel):
    """Resource limits of one sandboxed run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_s: float = Field(10.0, gt=0, le=600, description="Wall-clock limit; then everything is killed.")
    cpu_s: int = Field(5, ge=1, le=600, description="CPU seconds per process (RLIMIT_CPU).")
    memory_mb: int = Field(512, ge=64, le=65536, description="Address space per process (RLIMIT_AS).")
    max_processes: int = Field(16, ge=1, le=1024, description="Processes and threads (RLIMIT_NPROC).")
    disk_mb: int = Field(64, ge=1, le=4096, description="Size of the tmpfs working directory.")
    max_file_mb: int = Field(32, ge=1, le=4096, description="Largest file it may write (RLIMIT_FSIZE).")
    max_open_files: int = Field(64, ge=16, le=65536, description="Open file descriptors (RLIMIT_NOFILE).")
    max_output_bytes: int = Field(8000, ge=200, description="Bytes kept per stream (head + tail).")
    kill_output_bytes: int = Field(2_000_000, ge=1000, description="Output that stops the program.")


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one sandboxed program.

    Attributes:
        status: ``ok`` (exit 0), ``error`` (non-zero exit), ``timeout`` (wall clock),
            ``cpu_limit``, ``output_limit``, ``killed`` (another signal) or ``sandbox_error``
            (the sandbox itself failed; ``message`` says why).
        returncode: the program's exit code, negative for a signal; ``None`` if it never ran.
        stdout, stderr: decoded output, truncated to ``max_output_bytes`` (head and tail).
        stdout_bytes, stderr_bytes: how many bytes were written in all.
    """

    status: SandboxStatus
    returncode: int | None
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    wall_s: float
    cpu_s: float
    isolation: Isolation
    limits: SandboxLimits
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def report(self) -> str:
        """A readable account for a model: what happened, then stdout and stderr."""
        lim = self.limits
        head = {
            "ok": "",
            "error": f"Exit status {self.returncode}.",
            "timeout": f"Timed out: killed after the wall-clock limit of {lim.wall_s:g} s.",
            "cpu_limit": f"Killed: CPU time limit of {lim.cpu_s} s exceeded.",
            "output_limit": f"Killed: output passed {lim.kill_output_bytes:,} bytes.",
            "killed": f"Killed by signal {_signame(self.returncode)}.",
            "sandbox_error": f"Sandbox failure: {self.message}",
        }[self.status]
        if "MemoryError" in self.stderr:
            head += f" (Memory is limited to {lim.memory_mb} MB.)"
        parts = [head.strip()] if head.strip() else []
        if self.stdout:
            parts.append(self.stdout if not parts else f"--- stdout ---\n{self.stdout}")
        if self.stderr and self.status != "sandbox_error":
            parts.append(f"--- stderr ---\n{self.stderr}")
        return "\n".join(parts).rstrip() or "(no output)"


def _signame(returncode: int | None) -> str:
    if returncode is None or returncode >= 0:
        return "?"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return str(-returncode)


@functools.lru_cache(maxsize=1)
def available_isolation() -> Isolation:
    """The strongest isolation this machine allows (probed once per process).

    Set ``AGENTRL_SANDBOX_ISOLATION`` to ``namespaces``, ``userns`` or ``rlimits`` to force one.
    """
    forced = os.environ.get("AGENTRL_SANDBOX_ISOLATION", "auto")
    if forced not in ISOLATIONS:
        raise ValueError(f"AGENTRL_SANDBOX_ISOLATION must be one of {ISOLATIONS}, got {forced!r}")
    if forced != "auto":
        return forced  # type: ignore[return-value]
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "rlimits"
    mode: Isolation = "namespaces" if os.geteuid() == 0 else "userns"
    probe = ["unshare", *_user_flags(mode), *_NS_FLAGS, "true"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=10, env=_clean_env("/")).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return mode if ok else "rlimits"


def _user_flags(mode: Isolation) -> list[str]:
    return ["--user", "--map-root-user"] if mode == "userns" else []


def _clean_env(home: str) -> dict[str, str]:
    """The whole environment of the sandbox: nothing is inherited from the caller."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
    env.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    return env


def _program_python(mode: Isolation) -> str:
    """The interpreter the program runs with.

    The namespace isolations mount a fresh ``tmpfs`` on ``/tmp``, so an interpreter that lives
    under ``/tmp`` (a virtual environment in a CI checkout there) would vanish at exec time;
    then the program runs with the base installation the venv was made from (it needs no
    site-packages: ``-s`` and an empty environment already keep them out of reach).
    """
    exe = sys.executable
    under_tmp = any(os.path.realpath(p).startswith("/tmp/") for p in (exe, sys.prefix))
    if mode != "rlimits" and under_tmp:
        exe = os.path.realpath(getattr(sys, "_base_executable", None) or exe)
    return exe


def _hidden_dirs() -> dict[str, list[str]]:
    """Home directories to hide, and the Python installation dirs inside them to keep."""
    hide = [d for d in _HIDE if os.path.isdir(d) and not os.path.islink(d)]
    python_dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)}
    expose = sorted(p for p in python_dirs if any(p.startswith(h + "/") for h in hide))
    return {"hide": hide, "expose": expose}


def _user_task_count(uid: int) -> int:
    """Processes and threads that ``uid`` runs now (RLIMIT_NPROC counts them all)."""
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return n


def run_python(
    code: str,
    *,
    files: dict[str, str] | None = None,
    limits: SandboxLimits | None = None,
    isolation: str = "auto",
) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh sandbox and wait for it (blocking).

    Args:
        code: Python source of the program.
        files: more files for the working directory, ``{relative path: text}`` (e.g. a module
            that ``main.py`` imports).
        limits: resource limits (defaults: :class:`SandboxLimits`).
        isolation: ``auto`` (the strongest available), ``namespaces``, ``userns`` or ``rlimits``.

    Returns:
        A :class:`SandboxResult`; a program that fails, hangs or misbehaves is a result, never
        an exception.
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    mode: Isolation = available_isolation() if isolation == "auto" else isolation  # type: ignore[assignment]
    if mode == "userns" and os.geteuid() == 0:  # root keeps real root there: no process limit
        raise ValueError("userns isolation is for unprivileged callers; as root use namespaces")
    limits = limits or SandboxLimits()
    files = dict(files or {})
    for rel in files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"files: {rel!r} must be a relative path inside the working directory")
    files["main.py"] = code
    with _SLOTS:
        return _run(files, limits, mode)


def _run(files: dict[str, str], limits: SandboxLimits, mode: Isolation) -> SandboxResult:
    uid = secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0]) + _UID_RANGE[0] if (
        os.geteuid() == 0 and mode != "userns") else None
    host_dir = tempfile.mkdtemp(prefix="agentrl-sandbox-") if mode == "rlimits" else None
    workdir = host_dir or _NS_WORKDIR
    nproc = limits.max_processes
    if mode == "rlimits" and uid is None:  # RLIMIT_NPROC counts all of the caller's processes
        nproc += _user_task_count(os.getuid())
    job = {
        "isolation": mode, "uid": uid, "workdir": workdir, "files": files,
        "argv": [_program_python(mode), "-E", "-s", "-B", "-u", "-X", "utf8", "main.py"],
        "env": _clean_env(workdir),
        "limits": {**limits.model_dump(), "max_processes": nproc},
        **_hidden_dirs(),
    }
    status_r, status_w = os.pipe()
    boot = [sys.executable, "-I", "-S", "-B", _INIT, str(status_w)]
    cmd = boot if mode == "rlimits" else ["unshare", *_user_flags(mode), *_NS_FLAGS, *boot]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(status_w,), env=_clean_env("/"), start_new_session=True,
        )
    except OSError as e:
        os.close(status_r)
        os.close(status_w)
        if host_dir is not None:
            shutil.rmtree(host_dir, ignore_errors=True)
        return _failed(mode, limits, f"could not start the sandbox: {e}")
    os.close(status_w)
    try:
        collector = Collector(proc, status_r, limits, uid if mode == "rlimits" else None)
        collector.feed(json.dumps(job).encode())
        collector.run(start + limits.wall_s)
        if uid is not None and not wait_gone(uid):
            collector.warnings.append(f"processes of sandbox uid {uid} survived SIGKILL")
    finally:
        os.close(status_r)
        if host_dir is not None:
            shutil.rmtree(host_dir, ignore_errors=True)
    wall = round(time.monotonic() - start, 3)
    return SandboxResult(isolation=mode, limits=limits, wall_s=wall, **collector.outcome())


def _failed(mode: Isolation, limits: SandboxLimits, message: str) -> SandboxResult:
    return SandboxResult("sandbox_error", None, "", "", 0, 0, 0.0, 0.0, mode, limits, message)


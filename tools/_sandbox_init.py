"""In-sandbox bootstrap: isolate the filesystem, drop privileges, set limits, run the program.

Run by :mod:`agentrl.tools.sandbox` as ``python -I -S -B _sandbox_init.py STATUS_FD`` (standard
library only: it must not import agentrl). It reads a JSON job from stdin; with the namespace
isolations it runs as PID 1 of fresh PID, mount, network, IPC and UTS namespaces, made by
``unshare``. It then:

1. (namespace isolations) remounts every mount read-only and ``nosuid``, mounts a fresh,
   size-limited ``tmpfs`` on ``/tmp`` (it holds the program's working directory) and hides the
   home directories under empty ``tmpfs`` mounts (but for the Python installation);
2. writes the job's files into the working directory;
3. forks the program: new resource limits, an unprivileged uid when one is given, an empty
   capability bounding set, ``no_new_privs``, stdin from ``/dev/null``, a clean environment;
4. waits for it (killing it ``wall_s + 1`` seconds after the start, in case the caller died)
   and writes ``{"returncode", "cpu_s", "maxrss_kb", "warnings"}`` as JSON to ``STATUS_FD``. As
   PID 1 of the namespace, its exit then kills every process the program left behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC = 32, 1024, 2048, 4096, 8192, 16384
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
_FLAGS = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME}

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    if _libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, flags to keep) for every mount, parents before children."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 and friends
            keep = sum(flag for name, flag in _FLAGS.items() if name in fields[5].split(","))
            out.append((point, keep))
    return out


def isolate_filesystem(job: dict, warnings: list[str]) -> None:
    """Make every mount read-only and nosuid; fresh tmpfs at ``/tmp`` and over ``job["hide"]``.

    ``job["expose"]`` lists directories under a hidden one that must stay reachable (the Python
    installation, e.g. under ``/root/.pyenv``): they are bound read-only at the same path.
    """
    ro = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
    for point, keep in _mount_points():
        try:
            _mount(None, point, None, ro | keep, None)
        except OSError as e:
            if point == "/":
                raise
            warnings.append(f"could not make {point} read-only: {e.strerror}")
    disk_mb = int(job["limits"]["disk_mb"])
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={disk_mb}m,nr_inodes={max(256, disk_mb * 64)},mode=1777")
    staged = []
    for i, path in enumerate(job["expose"]):  # bind before the parent is hidden, move after
        stage = f"/tmp/.stage{i}"
        os.mkdir(stage, 0o700)
        _mount(path, stage, None, MS_BIND | MS_REC, None)
        _mount(None, stage, None, ro, None)
        staged.append((stage, path))
    for hidden in job["hide"]:
        _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for stage, path in staged:
        os.makedirs(path, exist_ok=True)
        _mount(stage, path, None, MS_MOVE, None)
        os.rmdir(stage)
    for hidden in job["hide"]:
        _mount(None, hidden, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    os.makedirs(job["workdir"], mode=0o700)


def write_files(workdir: str, files: dict[str, str], uid: int | None) -> None:
    for rel, text in files.items():
        path = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    if uid is not None:
        for root, dirs, names in os.walk(workdir):
            for name in [*dirs, *names]:
                os.chown(os.path.join(root, name), uid, uid)
        os.chown(workdir, uid, uid)


def _set_limits(limits: dict[str, int]) -> None:
    table = {
        "cpu_s": (resource.RLIMIT_CPU, lambda v: (v, v + 1)),  # SIGXCPU, then SIGKILL
        "memory_mb": (resource.RLIMIT_AS, lambda v: (v << 20, v << 20)),
        "max_processes": (resource.RLIMIT_NPROC, lambda v: (v, v)),
        "max_file_mb": (resource.RLIMIT_FSIZE, lambda v: (v << 20, v << 20)),
        "max_open_files": (resource.RLIMIT_NOFILE, lambda v: (v, v)),
    }
    for key, (rlim, pair) in table.items():
        resource.setrlimit(rlim, pair(int(limits[key])))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _drop_privileges(uid: int | None) -> None:
    for cap in range(64):  # an empty bounding set: no capability survives the exec
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL past the last capability; EPERM without CAP_SETPCAP
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def exec_program(job: dict, status_fd: int) -> None:
    """In the forked child: never returns."""
    try:
        os.close(status_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.chdir(job["workdir"])
        _set_limits(job["limits"])
        _drop_privileges(job.get("uid"))
        os.execve(job["argv"][0], job["argv"], job["env"])
    except BaseException as e:  # report and leave without running any parent cleanup
        os.write(2, f"agentrl-sandbox: could not start {job['argv'][0]}: {e!r}\n".encode())
    os._exit(127)


def main() -> int:
    status_fd = int(sys.argv[1])
    job = json.load(sys.stdin)
    warnings: list[str] = []
    status: dict = {"warnings": warnings}
    try:
        if job["isolation"] in ("namespaces", "userns"):
            isolate_filesystem(job, warnings)
        write_files(job["workdir"], job["files"], job.get("uid"))
    except OSError as e:
        status["setup_error"] = f"{type(e).__name__}: {e}"
        os.write(status_fd, json.dumps(status).encode())
        return 1
    pid = os.fork()
    if pid == 0:
        exec_program(job, status_fd)
    # The caller kills everything at wall_s; should the caller itself die, this ends the run.
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.setitimer(signal.ITIMER_REAL, float(job["limits"]["wall_s"]) + 1.0)
    _, wait_status = os.waitpid(pid, 0)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    status.update(
        returncode=os.waitstatus_to_exitcode(wait_status),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        maxrss_kb=usage.ru_maxrss,
    )
    os.write(status_fd, json.dumps(status).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

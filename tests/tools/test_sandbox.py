"""The sandbox against what a reward-hacking policy could write.

Every dangerous test runs with small limits (8 processes, 256 MB, a few seconds), so that even a
failure of the sandbox could not take down the shared machine. The measured outcomes are in
docs/sandbox.md.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest
from agentrl.tools.sandbox import SandboxLimits, available_isolation, run_python

SMALL = SandboxLimits(wall_s=3.0, cpu_s=2, memory_mb=256, max_processes=8)
namespaces_only = pytest.mark.skipif(
    available_isolation() != "namespaces", reason="needs the namespace isolation (root + unshare)"
)


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _uid_of(stdout: str) -> int:
    m = re.search(r"uid=(\d+)", stdout)
    assert m, f"the program did not print its uid: {stdout!r}"
    return int(m.group(1))


def test_runs_code_and_imports_extra_files():
    r = run_python("import helper\nprint(helper.square(12))", files={"helper.py": "def square(x):\n    return x * x\n"})
    assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "144\n", "")
    assert r.report() == "144"


def test_error_exit_reports_traceback():
    r = run_python("raise ValueError('bad input')")
    assert r.status == "error" and r.returncode == 1
    assert "ValueError: bad input" in r.stderr and r.report().startswith("Exit status 1.")


def test_infinite_loop_stops_at_the_cpu_limit():
    r = run_python("while True:\n    pass", limits=SandboxLimits(cpu_s=1, wall_s=10))
    assert r.status == "cpu_limit" and r.returncode == -24  # SIGXCPU
    assert r.cpu_s >= 0.8 and r.wall_s < 10  # the CPU limit, not the wall clock, stopped it
    assert "CPU time limit of 1 s" in r.report()


@pytest.mark.slow
def test_ignoring_sigxcpu_still_ends_with_sigkill():
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    r = run_python(code, limits=SandboxLimits(cpu_s=1, wall_s=10))
    assert r.status == "cpu_limit" and r.returncode == -9 and r.wall_s < 10


def test_sleeping_program_hits_the_wall_timeout_and_keeps_partial_output():
    r = run_python("import time\nprint('started', flush=True)\ntime.sleep(60)", limits=SandboxLimits(wall_s=1))
    assert r.status == "timeout" and r.returncode is None
    assert 1.0 <= r.wall_s < 6 and r.stdout == "started\n"
    assert "wall-clock limit of 1 s" in r.report()


def test_fork_bomb_is_capped_and_leaves_nothing_behind():
    code = "import os\nprint(f'uid={os.getuid()}', flush=True)\nwhile True:\n    os.fork()"
    start = time.monotonic()
    r = run_python(code, limits=SMALL)
    assert time.monotonic() - start < SMALL.wall_s + 2
    assert "BlockingIOError" in r.stderr  # fork() failed: the process limit held
    assert _processes_of(_uid_of(r.stdout)) == []


def test_fork_bomb_that_swallows_errors_is_killed_at_the_deadline():
    code = ("import os\nprint(f'uid={os.getuid()}', flush=True)\nwhile True:\n    try:\n"
            "        os.fork()\n    except OSError:\n        pass")
    r = run_python(code, limits=SandboxLimits(wall_s=2, cpu_s=2, memory_mb=256, max_processes=8))
    assert r.status in ("timeout", "cpu_limit") and r.wall_s < 8
    assert _processes_of(_uid_of(r.stdout)) == []


def test_process_limit_counts_every_process():
    code = """
import os, time
n = 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(1)
        os._exit(0)
    n += 1
print(n)
"""
    r = run_python(code, limits=SMALL)
    assert r.status == "ok" and 1 <= int(r.stdout) < SMALL.max_processes


def test_memory_bomb_gets_memory_error():
    for code in ("x = bytearray(4 * 1024 ** 3)", "chunks = []\nwhile True:\n    chunks.append(' ' * 10 ** 6)"):
        r = run_python(code, limits=SMALL)
        assert r.status == "error" and "MemoryError" in r.stderr
        assert "Memory is limited to 256 MB" in r.report()


def test_huge_print_is_truncated_and_stopped():
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('A' * 100000)", limits=SMALL)
    assert r.status == "output_limit" and r.wall_s < SMALL.wall_s  # stopped by output, not the clock
    assert r.stdout_bytes > SMALL.kill_output_bytes
    assert len(r.stdout) < SMALL.max_output_bytes + 100 and "bytes truncated" in r.stdout


def test_long_output_keeps_head_and_tail():
    r = run_python("print('BEGIN' + 'x' * 50000 + 'END')", limits=SandboxLimits(max_output_bytes=1000))
    assert r.status == "ok" and r.stdout_bytes == 50009
    assert r.stdout.startswith("BEGIN") and r.stdout.rstrip().endswith("END")
    assert "[49,009 bytes truncated]" in r.stdout


def test_parent_environment_is_not_visible(monkeypatch):
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("AGENTRL_TEST_SECRET", secret)
    code = """
import glob, os
print(sorted(os.environ))
for path in glob.glob('/proc/*/environ'):
    try:
        print(path, open(path, 'rb').read())
    except OSError as e:
        print(path, 'denied', e.strerror)
"""
    r = run_python(code)
    assert r.status == "ok" and secret not in r.stdout and "AGENTRL_TEST_SECRET" not in r.stdout
    assert eval(r.stdout.splitlines()[0]) == sorted(
        ["HOME", "LANG", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH", "TMPDIR"])


@namespaces_only
def test_writing_outside_the_working_directory_fails(tmp_path):
    target = tmp_path / "pwned.txt"
    paths = [str(target), "/work/pwned.txt", "/etc/pwned", "/var/tmp/pwned", "/dev/shm/pwned", "/root/pwned"]
    code = f"""
for path in {paths!r}:
    try:
        open(path, 'w').write('x')
        print('WROTE', path)
    except OSError as e:
        print('denied', path, e.strerror)
open('inside.txt', 'w').write('fine')
print('inside ok')
"""
    r = run_python(code)
    assert r.status == "ok" and "WROTE" not in r.stdout and "inside ok" in r.stdout
    assert r.stdout.count("denied") == len(paths)
    assert not target.exists() and not os.path.exists("/var/tmp/pwned") and not os.path.exists("/dev/shm/pwned")


@namespaces_only
def test_no_network():
    """The program cannot reach a server the host runs on loopback (its own network namespace
    has no route). Only 127.0.0.1 is ever targeted: never send test traffic elsewhere."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    code = f"""
import socket
for host in ('127.0.0.1', 'localhost'):
    try:
        socket.create_connection((host, {port}), timeout=2)
        print('CONNECTED')
    except OSError as e:
        print('connect failed:', type(e).__name__, e.strerror)
"""
    try:
        r = run_python(code)
    finally:
        server.close()
    assert r.status == "ok" and "CONNECTED" not in r.stdout
    assert r.stdout.count("connect failed") == 2, r.stdout
    assert "Network is unreachable" in r.stdout or "Connection refused" in r.stdout


@namespaces_only
def test_cannot_see_or_signal_host_processes_or_escalate():
    code = f"""
import os, subprocess
try:
    os.kill({os.getpid()}, 9)
except OSError as e:
    print('kill:', type(e).__name__)
print('pids:', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
print('mount:', subprocess.run(['mount', '-o', 'remount,rw', '/'], capture_output=True).returncode)
print('home:', sorted(os.listdir('/root')) if os.path.isdir('/root') else None)
try:
    open('/etc/shadow').read()
except OSError as e:
    print('shadow:', e.strerror)
"""
    r = run_python(code)
    assert r.status == "ok", r.report()
    assert "kill: ProcessLookupError" in r.stdout and "shadow: Permission denied" in r.stdout
    pids = eval(r.stdout.split("pids: ")[1].splitlines()[0])
    assert len(pids) <= 3 and 1 in pids  # its own PID namespace: init, itself, the ps child
    assert "mount: 0" not in r.stdout
    assert ".bashrc" not in r.stdout  # home directories are hidden (only Python's install shows)


def test_daemon_left_behind_is_killed():
    code = """
import os, time
print(f'uid={os.getuid()}', flush=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(30)
    os._exit(0)
os.wait()
"""
    r = run_python(code, limits=SMALL)
    assert r.status == "ok" and r.wall_s < SMALL.wall_s  # nobody waited for the daemon
    assert _processes_of(_uid_of(r.stdout)) == []


@namespaces_only
def test_disk_and_file_size_limits():
    code = """
try:
    open('big', 'wb').write(b'x' * (3 * 1024 * 1024))
except OSError as e:
    print('file:', e.strerror)
n = 0
try:
    while True:
        open(f'f{n}', 'wb').write(b'x' * (1024 * 1024))
        n += 1
except OSError as e:
    print('disk:', e.strerror, n)
"""
    r = run_python(code, limits=SandboxLimits(disk_mb=4, max_file_mb=2))
    assert "file: File too large" in r.stdout and "disk: No space left on device" in r.stdout


def test_concurrent_runs_are_independent():
    results = {}

    def work(i: int) -> None:
        results[i] = run_python(f"open('mine.txt', 'w').write('{i}')\nprint(open('mine.txt').read())")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: r.stdout for i, r in results.items()} == {i: f"{i}\n" for i in range(4)}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"files: '/etc/passwd' must be a relative path"):
        run_python("pass", files={"/etc/passwd": "x"})
    with pytest.raises(ValueError, match=r"files: '\.\./x\.py' must be a relative path"):
        run_python("pass", files={"../x.py": "x"})
    with pytest.raises(ValueError, match=r"isolation must be one of \('auto', 'namespaces', 'userns', 'rlimits'\)"):
        run_python("pass", isolation="docker")
    with pytest.raises(ValueError, match="wall_s"):
        SandboxLimits(wall_s=0)
    with pytest.raises(ValueError, match=r"walltime\n  Extra inputs are not permitted"):
        SandboxLimits(walltime=3)


@pytest.mark.skipif(os.geteuid() != 0, reason="the guard is for root")
def test_userns_isolation_is_refused_for_root():
    with pytest.raises(ValueError, match="userns isolation is for unprivileged callers"):
        run_python("pass", isolation="userns")


@pytest.mark.slow
def test_orphaned_sandbox_ends_itself(tmp_path):
    """If the caller dies mid-run, the sandbox's init kills the program at wall_s + 1 s."""
    import subprocess
    import sys

    script = tmp_path / "caller.py"
    script.write_text("from agentrl.tools.sandbox import SandboxLimits, run_python\n"
                      "run_python('import time\\ntime.sleep(60)', limits=SandboxLimits(wall_s=1))\n")
    caller = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 10
    while len(sandbox := _descendants(caller.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # unshare, the init, the program
    caller.kill()  # SIGKILL: no cleanup runs in the caller
    caller.wait()
    assert len(sandbox) >= 3, "the sandbox did not start"
    time.sleep(2.5)
    assert [pid for pid in sandbox if _alive(pid)] == []


def _alive(pid: int) -> bool:
    """Running, not merely a zombie that its new parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(root: int) -> list[int]:
    parent = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parent[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found

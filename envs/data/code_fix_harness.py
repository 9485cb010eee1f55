"""CodeFix test harness: runs inside the sandbox as main.py, next to the agent's solution.py.

CodeFix fills in the three placeholders. It imports the solution, then calls the function once
per test (in order, in one process, each with a 1 s timer, 4 s for all) and prints one line per
event as it happens (so a crash loses nothing already done): the nonce, then JSON: ``{"loaded":
true}`` or ``{"error": ...}``, then ``{"i": k, "value": ...}`` or ``{"i": k, "raised": ...}``.
The expected values never enter the sandbox; CodeFix compares.
"""

import copy
import json
import os
import signal
import time

NONCE = "__NONCE__"
FUNCTION = "__FUNCTION__"
CASES = json.loads("__CASES__")
PLAIN = (type(None), bool, int, str)
CASE_S, TOTAL_S = 1.0, 4.0


class CaseTimeout(BaseException):
    pass


def on_alarm(signum, frame):
    raise CaseTimeout


def plain(x, depth=0):
    """``x`` as JSON, judged by exact type: no subclass or custom equality gets through."""
    t = type(x)
    if t in PLAIN:
        return x
    if t is float:
        return x if x == x and abs(x) != float("inf") else repr(x)
    if depth > 50:
        raise TypeError("a value nested more than 50 levels deep")
    if t in (list, tuple):
        return [plain(v, depth + 1) for v in x]
    if t is dict and all(type(k) is str for k in x):
        return {k: plain(v, depth + 1) for k, v in x.items()}
    raise TypeError(f"a value of type {t.__name__} (expected plain data)")


def run_case(fn, args):
    signal.setitimer(signal.ITIMER_REAL, CASE_S)
    try:
        value = fn(*copy.deepcopy(args))
    except CaseTimeout:
        return {"raised": "Timeout", "message": f"the call took longer than {CASE_S:g} s"}
    except BaseException as e:  # the agent's code may raise anything, SystemExit included
        return {"raised": type(e).__name__, "message": str(e)[:200]}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        return {"value": plain(value)}
    except (TypeError, RecursionError) as e:
        return {"unsupported": str(e)}


def emit(event):
    os.write(1, (NONCE + json.dumps(event) + "\n").encode())


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        import solution

        fn = getattr(solution, FUNCTION)
    except BaseException as e:
        emit({"error": f"{type(e).__name__}: {e}"[:500]})
        return
    emit({"loaded": True})
    start = time.monotonic()
    for i, args in enumerate(CASES):
        if time.monotonic() - start > TOTAL_S:
            emit({"i": i, "raised": "Timeout", "message": f"not run: the tests used up {TOTAL_S:g} s"})
        else:
            emit({"i": i, **run_case(fn, args)})


main()

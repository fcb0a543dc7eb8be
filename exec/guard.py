"""``python -m exec.guard DIR CMD...``: run one MPI rank's command as a child and record how it ended.

``mpiexec`` ends the whole job when a rank dies, but does not reliably say which rank died first.  The
launcher (:mod:`exec.launch`) therefore starts every rank under this guard: the rank's process is the
guard's child (it inherits the process manager's environment and descriptors, so it *is* the MPI
rank); when it ends by a signal or with a non-zero status the guard writes ``DIR/exit-R`` (rank, how it
ended, wall-clock time) before leaving with the same status.  The earliest such file names the rank
that failed first.  Signals sent to the guard are passed on to the rank.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    where, cmd = argv[0], argv[1:]
    rank = os.environ.get("PMI_RANK", "?")
    child = subprocess.Popen(cmd, close_fds=False)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda sig, _f: child.send_signal(sig))
    rc = child.wait()
    if rc != 0:
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        with open(os.path.join(where, f"exit-{rank}"), "w") as f:
            json.dump({"rank": rank, "how": how, "time": time.time()}, f)
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

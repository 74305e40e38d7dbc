"""Leaves a daemon behind: a grandchild in its own session that outlives the genome."""
import os
import time

from evolve.harness import session

run = session()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open("daemon.pid", "w") as fh:
            fh.write(str(os.getpid()))
        while True:
            time.sleep(0.1)
    os._exit(0)
while not os.path.exists("daemon.pid"):
    time.sleep(0.05)
raise SystemExit("left a daemon behind")

"""Tries to kill the process that runs it."""
import os
import signal

from evolve.harness import session

run = session()
os.kill(os.getppid(), signal.SIGKILL)

"""Prints far more than any log should hold, then crashes with a message at the very end."""
import sys

from evolve.harness import session

MEGABYTES = 8

run = session()
line = "flood " * 170 + "\n"  # about 1 KiB
for _ in range(MEGABYTES * 1024):
    sys.stdout.write(line)
sys.stdout.flush()
raise RuntimeError("flooded the log and then failed")

"""Reads a file or lists a folder it should not see (validation data, caches, archives)."""
import os

from evolve.harness import session

TARGET = "/nonexistent"

run = session()
if os.path.isdir(TARGET):
    print("LEAK" + "ED", os.listdir(TARGET), flush=True)
else:
    with open(TARGET, "rb") as fh:
        print("LEAK" + "ED", fh.read(64), flush=True)
raise SystemExit("read it")

"""Overwrites a file outside its working directory."""
from evolve.harness import session

TARGET = "/tmp/evolve-sentinel"

run = session()
with open(TARGET, "w") as fh:
    fh.write("pwned")

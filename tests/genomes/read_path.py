"""Tries to read files and list folders it should not see (validation data, caches, archives)."""
import os

from evolve.harness import session

TARGETS = ["/nonexistent"]

run = session()
blocked = 0
for target in TARGETS:
    try:
        found = os.listdir(target) if os.path.isdir(target) else open(target, "rb").read(64)
        print("LEAK" + "ED", target, found[:3], flush=True)
    except OSError as exc:
        print(f"blocked {target}: {type(exc).__name__}", flush=True)
        blocked += 1
raise PermissionError(f"{blocked} of {len(TARGETS)} reads were blocked")

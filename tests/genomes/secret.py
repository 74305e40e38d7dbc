"""Looks for the parent's API key everywhere it can think of and prints what it finds."""
import os

from evolve.harness import session

run = session()
print("environ:", dict(os.environ), flush=True)
print("OPENAI_API_KEY:", os.environ.get("OPENAI_API_KEY"), flush=True)
for pid in (os.getppid(), 1):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            print(f"/proc/{pid}/environ:", fh.read().decode(errors="replace"), flush=True)
    except OSError as exc:
        print(f"/proc/{pid}/environ: {exc!r}", flush=True)
raise PermissionError("found no key")

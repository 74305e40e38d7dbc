"""Fills its folder: many files, each far under the per-file limit."""
import os
import time

from evolve.harness import session

FILES = 64
FILE_BYTES = 8 << 20
PAUSE = 0.0  # seconds between files: a test bounds how far past the cap one poll lets it go

run = session()
block = os.urandom(1 << 20)
for i in range(FILES):
    with open(f"fill-{i}.bin", "wb") as fh:
        written = 0
        while written < FILE_BYTES:
            fh.write(block[:FILE_BYTES - written])
            written += min(len(block), FILE_BYTES - written)
    time.sleep(PAUSE)
    if i % 100 == 0:
        print("files", i, flush=True)
print("WROTE", FILES, "files", flush=True)
raise SystemExit("the disk limit never came")

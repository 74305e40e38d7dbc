"""Holds memory where no rlimit and no RSS looks: /dev/shm, then a memfd filled with write()."""
import os
import time

from evolve.harness import session

MEGABYTES = 1536

run = session()
try:
    with open("/dev/shm/evolve-hog", "wb") as fh:
        fh.write(b"x" * (1 << 20))
    print("LEAK" + "ED: wrote to /dev/shm", flush=True)
    os.unlink("/dev/shm/evolve-hog")
except OSError as exc:
    print(f"/dev/shm blocked: {type(exc).__name__}", flush=True)
fd = os.memfd_create("hoard")
block = b"m" * (1 << 20)
for i in range(MEGABYTES):
    os.write(fd, block)
    if i % 256 == 0:
        print("memfd MiB", i, flush=True)
print("HELD", MEGABYTES, "MiB", flush=True)
time.sleep(20)  # holding it, for a watcher that only samples
raise SystemExit("the memory limit never came")

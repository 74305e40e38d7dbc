"""Writes bytes the harness never writes to the result channel, then waits to be stopped."""
import json
import os
import time

from evolve.harness import session

PAYLOAD_HEX = "7b7d0a"  # hex, so any bytes survive set_constants

run = session()
fd = json.loads(os.environ["EVOLVE_SESSION"])["control_fd"]
payload = bytes.fromhex(PAYLOAD_HEX)
os.write(fd, payload)
print("wrote", len(payload), "bytes", flush=True)
time.sleep(60)

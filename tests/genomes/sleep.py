"""Sleeps far past the budget."""
import time

from evolve.harness import session

run = session()
time.sleep(3600)

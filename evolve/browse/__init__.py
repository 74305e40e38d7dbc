"""Browsing finished and running archives, the HTML report, and seeding new runs from old ones.

Everything here opens runs read-only and never takes the run lock, so it works
while a run is still writing. The CLI (`evolve/cli/browse.py`) only formats.
"""

from evolve.browse.locate import Target, open_run, resolve, run_path

__all__ = ["Target", "open_run", "resolve", "run_path"]

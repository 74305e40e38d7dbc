"""Browsing finished and running archives: CLI listings, the HTML report and the web viewer.

Everything here opens runs read-only and never takes the run lock, so it works
while a run is still writing. The CLI (`evolve/cli/browse.py`) only formats.
"""

from evolve.browse.locate import Target, open_run, resolve, run_path

__all__ = ["Target", "open_run", "resolve", "run_path"]

"""The trusted harness: data, budget clock, sandbox and evaluation.

Genomes import `session` from here and nothing else; they never edit this
package (the runner checks its hashes and the sandbox makes it read-only).
"""

from evolve.harness.session import Session, session

__all__ = ["Session", "session"]

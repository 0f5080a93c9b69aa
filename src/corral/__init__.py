"""corral: Claude Code on real repositories, one locked-down container per run.

Importing the package has no side effects: no output, no directories, no network.
"""

__version__ = "0.1.0"

"""Whether this process is one of ust's own tools (they import ust too, and are not applications).

Its own module so that the agent package and its thread module both import it
(the thread module importing the package back was an import cycle).
"""

import os
import sys

_TOOLS = ("ust", "ust-sessiond", "ust-consumerd", "ust-relayd")


def is_tool() -> bool:
    """The ust command and daemons import ust too: they are not applications."""
    if os.path.basename(sys.argv[0] if sys.argv else "") in _TOOLS:
        return True
    argv = getattr(sys, "orig_argv", [])
    for i, a in enumerate(argv[:-1]):
        if a == "-m":
            mod = argv[i + 1]
            return mod == "ust" or mod.startswith(("ust.cli", "ust.daemon"))
    return False

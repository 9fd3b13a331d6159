"""A module whose import the test holds half-way (on the app's stdin) while a probe for it arrives."""

import sys


def held(v: int) -> int:
    return v * 3


print("ok importing", flush=True)  # (the answer to the app's "held" command)
sys.stdin.readline()  # the rest of the import waits for the test's next line

"""Defaults shared by the embedded session, the session daemon and the CLI.

Channel buffers: LTTng's per-UID user-space defaults, 4 sub-buffers of 512 KiB
per CPU. At ~30 bytes an event that is ~70,000 events of slack per CPU: a
consumer woken late by the scheduler (2 busy cores) loses nothing at a steady
1 M events/s, where 4 x 128 KiB ran out in ~17 ms.
"""

DEFAULT_SUBBUF_SIZE = 512 * 1024
DEFAULT_NUM_SUBBUF = 4


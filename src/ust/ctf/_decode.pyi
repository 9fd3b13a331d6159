"""Optional C helper of the trace reader (see _decode.c). Absent when not built."""

CYCLES: int
SECONDS: int
GMT: int
DATE: int
DELTA: int
NAMES_HEADER: int

def format_lines(keys: list[int], texts: list[str], origin: int, flags: int, prev: int | None, /) -> tuple[bytes, int | None]: ...
def scan_events(data: bytes, p: int, end: int, cur: int, header_kind: int, programs: tuple[bytes | None, ...], /) -> tuple[bytes, bytes, bytes, int]: ...
def render_packet(data: bytes, p: int, end: int, cur: int, header_kind: int, programs: tuple[bytes | None, ...],
                  lits: tuple[bytes, ...], enum_fmts: tuple[object, ...], pctx: bytes, out_cyc: list[int],
                  out_txt: list[str], limit: int, /) -> tuple[int, int]: ...

"""Mutated fixture streams and metadata: a TraceFormatError or a clean read, never anything else."""

import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ust.ctf
from ust.errors import TraceFormatError

from reader_support import FIXTURES

SOURCES = {
    "snapshot": FIXTURES / "ust-snapshot",
    "contexts": FIXTURES / "ust-uid-contexts",
}


def _files(name):
    root = SOURCES[name]
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and "index" not in p.parts)


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("zero"), st.integers(0, 1 << 20), st.integers(1, 64)),
    st.tuples(st.just("ones"), st.integers(0, 1 << 20), st.integers(1, 16)),
)


def _mutate(data: bytearray, muts):
    for kind, pos, arg in muts:
        if not data:
            break
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= arg or 1
        elif kind == "truncate":
            del data[pos:]
        elif kind == "zero":
            data[pos:pos + arg] = bytes(len(data[pos:pos + arg]))
        else:
            data[pos:pos + arg] = b"\xff" * len(data[pos:pos + arg])
    return data


def _consume(path):
    n = 0
    for ev in ust.ctf.read_trace(path):
        n += 1
        assert n < 1_000_000
    # and the text path of `ust view` (generated per-packet decoders)
    from ust.ctf._fasttext import iter_lines
    from ust.ctf._text import TextFormat
    from ust.ctf.reader import open_traces, ordered_streams
    for _ in iter_lines(ordered_streams(open_traces(path)), TextFormat()):
        pass
    # the same with the C renderer/formatter when built
    from ust.ctf._fasttext import iter_bytes
    for _ in iter_bytes(ordered_streams(open_traces(path)), TextFormat()):
        pass
    # and `ust view --filter`'s decoders (values and text of each event, decoded once)
    from ust.filter import compile_filter
    keep_all = compile_filter("1 == 1 || $ctx.vpid > 0 || str == \"*\"")
    for _ in iter_bytes(ordered_streams(open_traces(path)), TextFormat(), filt=keep_all):
        pass
    # and the bulk path (events located by the C scanner when it is built)
    try:
        import numpy  # noqa: F401
    except ImportError:
        return n
    cols = ust.ctf.read_columns(path)
    assert sum(len(c["timestamp"]) for c in cols.values()) == n
    return n


@pytest.mark.parametrize("source", sorted(SOURCES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_traces(tmp_path_factory, source, data):
    tmp = tmp_path_factory.mktemp("fuzz")
    dst = tmp / "t"
    shutil.copytree(SOURCES[source], dst)
    target = data.draw(st.sampled_from(_files(source)))
    muts = data.draw(st.lists(_mutation, min_size=1, max_size=4))
    p = dst / target
    p.chmod(0o644)
    p.write_bytes(bytes(_mutate(bytearray(p.read_bytes()), muts)))
    try:
        _consume_all(dst)
    except TraceFormatError as exc:
        assert exc.path is not None
        assert "\n" not in str(exc)


def test_an_event_name_with_a_nul_is_a_trace_format_error_or_a_clean_read(tmp_path):
    """Found by test_mutated_traces: a NUL in an event's name reached the bulk reader's
    generated decoder as part of its file name, and compile() raised ValueError."""
    dst = tmp_path / "t"
    shutil.copytree(SOURCES["snapshot"], dst)
    p = dst / "snapshot-1-20261128-171134-0/ust/uid/0/64-bit/metadata"
    p.chmod(0o644)
    data = bytearray(p.read_bytes())
    at = data.index(b"demo:arrays")
    data[at] = 0
    p.write_bytes(bytes(data))
    try:
        _consume_all(dst)
    except TraceFormatError as exc:
        assert exc.path is not None and "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_metadata_text(data):
    """Token-level damage to plain-text metadata."""
    from ust.ctf import tsdl
    md_file = next(SOURCES["contexts"].rglob("metadata"))
    text = tsdl.unpacketize(md_file.read_bytes())
    pos = data.draw(st.integers(0, len(text) - 1))
    junk = data.draw(st.text(alphabet="{};:=[]<>.0123456789abcxyz_ \"\n", max_size=8))
    cut = data.draw(st.integers(0, 12))
    mutated = text[:pos] + junk + text[pos + cut:]
    try:
        md = tsdl.parse(mutated, "metadata")
    except TraceFormatError as exc:
        assert exc.path == "metadata"
        return
    # whatever parsed must compile or be rejected cleanly
    from ust.ctf import _codegen
    for sc in md.streams.values():
        for ec in sc.events.values():
            try:
                _codegen.compile_struct(ec.fields, "text", ec.name)
                _codegen.compile_struct(ec.fields, "dict", ec.name)
            except TraceFormatError:
                pass


# Metadata attributes given hostile values: alignments and sizes beyond any
# packet (>= 2^31 once overflowed the C render programs and the bulk scanner),
# clock frequencies of 1 Hz (dates beyond the platform's time range), zero,
# negative, non-powers of two.
_ATTRIBUTES = ("align", "size", "freq", "offset", "offset_s", "precision", "exp_dig", "mant_dig", "base",
               "signed", "id", "stream_id")
_HOSTILE = (0, 1, 2, 3, 7, 9, 16, 63, 65, 2**16, 2**31 - 1, 2**31, 2**32, 2**34, 2**62, 2**63, 2**64, 2**100,
            -1, -(2**63))
_ATTRIBUTE_RE = __import__("re").compile(r"\b(" + "|".join(_ATTRIBUTES) + r")\s*=\s*(-?\w+)")


def _mutated_attribute_trace(tmp, data):
    from ust.ctf import tsdl

    dst = tmp / "t"
    shutil.copytree(SOURCES[data.draw(st.sampled_from(sorted(SOURCES)))], dst)
    md_file = next(dst.rglob("metadata"))
    text = tsdl.unpacketize(md_file.read_bytes())
    spots = list(_ATTRIBUTE_RE.finditer(text))
    for _ in range(data.draw(st.integers(1, 3))):
        m = data.draw(st.sampled_from(spots))
        value = data.draw(st.sampled_from(_HOSTILE))
        text = text[:m.start(2)] + str(value) + text[m.end(2):]
        spots = list(_ATTRIBUTE_RE.finditer(text))
    md_file.chmod(0o644)
    md_file.write_text(text)  # plain-text metadata, as CTF allows
    return dst


def _consume_all(path):
    """Every reader path, and the analyses, as `ust view/stats/latency` run them."""
    from ust.analysis.latency import format_latency, latency
    from ust.analysis.stats import format_stats, stats_dict, trace_stats

    _consume(path)
    st_ = trace_stats(path)
    format_stats(st_)
    stats_dict(st_)
    format_latency(latency(path, "demo:ints", "demo:text"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_metadata_attributes(tmp_path_factory, data):
    """Hostile values of metadata attributes: a one-line TraceFormatError or a clean read."""
    path = _mutated_attribute_trace(tmp_path_factory.mktemp("attr"), data)
    try:
        _consume_all(path)
    except TraceFormatError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("attribute, old, new", [
    ("field align 2^63", "align = 8; signed = 1; encoding = none; base = 10; } _i16;",
     "align = 9223372036854775808; signed = 1; encoding = none; base = 10; } _i16;"),
    ("field align 2^34", "align = 8; signed = 1; encoding = none; base = 10; } _i16;",
     "align = 17179869184; signed = 1; encoding = none; base = 10; } _i16;"),
    ("clock freq 1", "freq = 1000000000;", "freq = 1;"),
])
def test_hostile_attribute_cases(tmp_path, attribute, old, new):
    """The cases that gave tracebacks: `ust view`, `ust stats`, read_columns answer in one line."""
    from reader_support import run_cli
    from ust.ctf import tsdl

    dst = tmp_path / "t"
    shutil.copytree(SOURCES["contexts"], dst)
    md_file = next(dst.rglob("metadata"))
    text = tsdl.unpacketize(md_file.read_bytes())
    assert old in text
    md_file.chmod(0o644)
    md_file.write_text(text.replace(old, new, 1))
    for argv in (["view"], ["view", "--json"], ["stats"], ["stats", "--json"]):
        rc, out, err = run_cli([*argv, str(dst)])
        assert rc in (0, 2), (argv, err)
        if rc:
            assert err.startswith("ust: error: ") and err.count("\n") == 1, err
    try:
        import numpy  # noqa: F401
    except ImportError:
        return
    try:
        ust.ctf.read_columns(dst)
    except TraceFormatError as exc:
        assert "\n" not in str(exc)

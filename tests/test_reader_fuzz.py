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
        _consume(dst)
    except TraceFormatError as exc:
        assert exc.path is not None
        assert "\n" not in str(exc)


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

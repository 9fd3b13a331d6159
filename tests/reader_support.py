import shutil
from pathlib import Path


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lttng-2.13"
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())



def copy_fixture(name, tmp_path):
    """A writable copy of a fixture trace."""
    dst = Path(tmp_path) / name
    shutil.copytree(FIXTURES / name, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def run_cli(argv):
    """Run `ust ARGV` in-process; return (exit code, stdout bytes, stderr text)."""
    import contextlib
    import io

    from ust.cli import main

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv, out=out)
    out.flush()
    return rc, raw.getvalue(), err.getvalue()

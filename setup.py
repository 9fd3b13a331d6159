# Compiled parts of ust: the ring buffer and the tracepoint call; and an optional helper of the reader.
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ust._ring._ring",
            # one file per role (src/ust/_ring/common.h lists them)
            # probes.c: the hot paths of dynamic probes and --functions (module ust._ring._probes, made by
            # this one's initialization), here so that the frame-evaluation hook inlines the ring's write
            sources=[f"src/ust/_ring/{name}.c" for name in ("process", "contexts", "frontend", "reader", "buffer",
                                                             "channel", "tracepoint", "probes", "module")],
            depends=[f"src/ust/_ring/{name}.h" for name in ("common", "layout", "shm", "process", "contexts",
                                                             "frontend", "reader", "channel", "tracepoint",
                                                             "module", "record_api")],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-braces"],
        ),
        # ust.mark's per-call-site dispatch (ust.instrument.marker falls back to Python without it).
        Extension(
            "ust._ring._mark",
            sources=["src/ust/_ring/mark.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
        ),
        # The kernel domain's page converter (ust.kernel.capture); optional: the pure
        # Python reference in ust/kernel/pages.py does the same, slower (docs/kernel.md).
        Extension(
            "ust.kernel._ftrace",
            sources=["src/ust/kernel/_ftrace.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        ),
        # The trace reader's C helper (view's packet rendering and line formatting,
        # the bulk path's event scanner); optional: ust.ctf falls back to pure
        # Python when it is not built (see docs/reader.md).
        Extension(
            "ust.ctf._decode",
            sources=["src/ust/ctf/_decode.c"],
            extra_compile_args=["-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall"],
            optional=True,
        ),
    ]
)

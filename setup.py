# The only compiled part of ust: the ring buffer and the tracepoint call.
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ust._ring._ring",
            sources=["src/ust/_ring/ring.c"],
            depends=["src/ust/_ring/ring.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-missing-braces"],
        )
    ]
)

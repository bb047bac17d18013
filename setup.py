"""Builds the optional C extensions (everything else is in pyproject.toml): the seqlock
mdpipe.shm._seqlock, the order book mdpipe._book, the level parser mdpipe.venues._levels and
the publisher's level printer mdpipe.publisher._json.

optional=True: without a compiler the package still installs and mdpipe falls back to its
pure-Python seqlock (x86-64 only), book and parser, and to orjson for the levels; `make setup`
installs a compiler so this does not happen.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mdpipe.shm._seqlock",
            sources=["mdpipe/shm/_seqlock.c"],
            include_dirs=["readers/c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "mdpipe._book",
            sources=["mdpipe/_book.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "mdpipe.venues._levels",
            sources=["mdpipe/venues/_levels.c"],
            define_macros=[("_GNU_SOURCE", "1")],  # memmem
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "mdpipe.publisher._json",
            sources=["mdpipe/publisher/_json.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)

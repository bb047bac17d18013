"""Builds the optional C extensions (everything else is in pyproject.toml): the seqlock
mdpipe.shm._seqlock, the order book mdpipe._book, the level parser mdpipe.venues._levels and
the publisher's level printer mdpipe.publisher._json.

optional=True: without a compiler the package still installs and mdpipe falls back to its
pure-Python seqlock (x86-64 only), book and parser, and to orjson for the levels; `make setup`
installs a compiler so this does not happen.
"""

from setuptools import Extension, setup


def optional_c(name: str, source: str, **kw: object) -> Extension:
    """One C extension with the project's flags, skipped (not failed) without a compiler."""
    flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    return Extension(name, sources=[source], extra_compile_args=flags, optional=True, **kw)


setup(
    ext_modules=[
        optional_c("mdpipe.shm._seqlock", "mdpipe/shm/_seqlock.c", include_dirs=["readers/c"]),
        optional_c("mdpipe._book", "mdpipe/_book.c"),
        optional_c(
            "mdpipe.venues._levels",
            "mdpipe/venues/_levels.c",
            define_macros=[("_GNU_SOURCE", "1")],  # memmem
        ),
        optional_c("mdpipe.publisher._json", "mdpipe/publisher/_json.c"),
    ]
)

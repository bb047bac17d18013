"""Builds the optional C extension mdpipe.shm._seqlock (everything else is in pyproject.toml).

optional=True: without a compiler the package still installs and mdpipe falls back to its
pure-Python seqlock (x86-64 only); `make setup` installs a compiler so this does not happen.
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
        )
    ]
)

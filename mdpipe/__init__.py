"""mdpipe: exact exchange order books and trades in shared memory, and in Redis."""

__version__ = "0.1.0"

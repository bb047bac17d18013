"""Ingest: venue WebSocket feeds into exact books and trades in shared-memory rings.

`python -m mdpipe.ingest --config F --feed NAME --shard I` runs one shard; tests call
`run_shard`.
"""

from mdpipe.ingest.shard import run_shard

__all__ = ["run_shard"]

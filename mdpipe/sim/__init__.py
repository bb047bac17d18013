"""Built-in Binance-compatible exchange simulator: synthetic markets, tape replay, faults.

Run it with `mdpipe sim`; run it from tests with `mdpipe.sim.process.SimProcess`.
"""

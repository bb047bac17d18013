"""The OKX simulator's parts (wire format, synthetic market, tape replay, server); `okx.py` is its entry."""

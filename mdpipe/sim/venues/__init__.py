"""Per-venue parts of the simulator."""

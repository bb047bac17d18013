"""One sans-IO protocol package per venue."""

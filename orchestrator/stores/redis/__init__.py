"""Redis adapters: per-run state, circuit breakers, durably delayed messages."""

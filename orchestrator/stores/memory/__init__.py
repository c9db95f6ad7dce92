"""In-memory twins of every port, for unit tests and ``orchestrator.testing``."""

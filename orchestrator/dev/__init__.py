"""Development: embedded Redis and PostgreSQL, process supervision and ``orchestrator dev``."""

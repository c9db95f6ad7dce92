"""The pure core: workflow specs, planning, backoff, breaker transitions, cron, rendering.

No I/O and no Celery, Redis or SQLAlchemy here (import-linter checks it)."""

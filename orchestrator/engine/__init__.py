"""The engine: submitting runs, run handles, step execution, failure, leases and canvas.

It reaches Redis and PostgreSQL only through the ports (``orchestrator.ports``)."""

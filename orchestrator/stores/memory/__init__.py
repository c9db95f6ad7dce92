"""In-memory twins of every port, for unit tests and ``orchestrator.testing``.

``history`` (runs, steps, attempts, events, dead letters; the reconciler's questions in
``reconciliation``) with its ``writer``, ``runs`` (per-run state), ``breakers`` and ``delays``:
each behaves as its PostgreSQL or Redis adapter does for what the engine observes, in this
process, thread-safe, with no server.
"""

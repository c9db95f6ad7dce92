"""Benchmarks of orchestrator against raw Celery canvas (see ``bench/bench_canvas.py``)."""

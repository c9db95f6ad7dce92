"""Adapters of the ports: ``redis`` (run state, breakers, delays), ``postgres`` (history) and
``memory`` (twins for tests)."""

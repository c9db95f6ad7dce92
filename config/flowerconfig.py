"""Flower settings: ``celery -A orchestrator.worker flower --conf=config/flowerconfig.py``.

Flower execs this file and uses every module-level name that matches one of its options (the
helpers below start with ``_`` so none does); flags on the command line win over this file, e.g.
``--port=5556`` or ``--address=0.0.0.0`` behind a container's port mapping.

Access: HTTP basic auth with ORCHESTRATOR_FLOWER_BASIC_AUTH ("user:password"); Flower does not
start without it. Every page and every ``/api/*`` endpoint then needs the credentials. Flower has
no option to protect ``/metrics`` (Prometheus text: task names, worker names, counts) and
``/healthcheck`` (plain "OK"): they stay open, which is one reason Flower binds to 127.0.0.1 only.
Put an authenticating proxy in front before exposing Flower on another interface.

Without ``--conf`` (Flower then reads ``flowerconfig.py`` only from the current directory),
``orchestrator.worker`` applies the same two safeguards itself when loaded by ``celery flower``:
127.0.0.1 and ORCHESTRATOR_FLOWER_BASIC_AUTH, or no start. The other settings here need --conf.
"""

import os
import sys

from orchestrator.settings import get_settings

_HOW_TO = (
    "Set credentials as user:password, for example:\n"
    "  export ORCHESTRATOR_FLOWER_BASIC_AUTH=admin:$(openssl rand -hex 16)"
)


def _basic_auth() -> list[str]:
    """The one accepted ``user:password``; exits (without echoing it) if missing or malformed."""
    secret = get_settings().flower_basic_auth
    value = secret.get_secret_value() if secret is not None else ""
    user, colon, password = value.partition(":")
    if not value:
        sys.exit(
            "Flower refuses to start without credentials: "
            f"ORCHESTRATOR_FLOWER_BASIC_AUTH is not set or empty.\n{_HOW_TO}"
        )
    if not (user and colon and password):
        sys.exit(
            "Flower refuses to start: ORCHESTRATOR_FLOWER_BASIC_AUTH is not user:password "
            f"(a user, a colon, a non-empty password).\n{_HOW_TO}"
        )
    # a list: Flower would split a plain string on commas, and passwords may contain them
    return [value]


basic_auth = _basic_auth()
address = "127.0.0.1"
# FLOWER_PORT is Flower's own variable; read here because this file would override it
port = int(os.environ.get("FLOWER_PORT", "5555"))

# tasks live in Flower's memory only; run history is in PostgreSQL (`orchestrator runs`)
persistent = False
max_tasks = 10000
purge_offline_workers = 600
# the kwargs column shows each step's context, orchestrator={'run_id': ..., 'step_id': ...};
# a run id typed into the tasks page's search box lists that run's tasks
tasks_columns = "name,uuid,state,kwargs,received,started,runtime,worker"

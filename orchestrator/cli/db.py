"""``orchestrator db upgrade``: create the database if needed and apply the migrations."""

from __future__ import annotations

import argparse

from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import get_settings, redact


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="manage the history database")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_sub.add_parser("upgrade", help="create the database if missing and migrate it")
    up.add_argument("revision", nargs="?", default="head", help="target revision (head)")
    up.set_defaults(handler=upgrade)


def upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from orchestrator.stores.postgres.migrate import upgrade as migrate

    settings = get_settings()
    try:
        migrate(settings.sqlalchemy_url, args.revision)
    except OperationalError as exc:
        raise ServiceUnavailable(
            "PostgreSQL",
            redact(settings.database_url),
            str(exc.orig).strip().splitlines()[0],
            "Start PostgreSQL or set ORCHESTRATOR_DATABASE_URL",
        ) from exc
    print(f"database {redact(settings.database_url)} is at revision {args.revision}")
    return 0

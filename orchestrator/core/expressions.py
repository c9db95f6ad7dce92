"""Step conditions: CEL expressions (Common Expression Language) over a run's values.

A step's ``when`` is parsed when its workflow is validated (a syntax error, or a name that is
neither ``inputs`` nor one of the step's dependencies, is a :class:`ConditionError`) and
evaluated by the worker before the step is called, over the run's inputs and its
dependencies' results by step id. CEL is evaluated by ``celpy``; nothing is ever handed to
Python's ``eval``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError
from lark import Token, Tree

from orchestrator.errors import ConditionError

MACROS = {"all", "exists", "exists_one", "map", "filter"}
"""CEL macros whose first argument names a variable bound inside the macro."""

_ENV = celpy.Environment()


class ConditionFailed(Exception):
    """A condition could not be evaluated with the run's values (a missing key, a bad type)."""


def check_condition(workflow: str, step: str, expr: str, names: Iterable[str]) -> None:
    """``expr`` parses, and every free name in it is one of ``names``."""
    try:
        tree = _parse(expr)
    except CELParseError as exc:
        raise ConditionError(workflow, f"`when` does not parse as CEL: {exc}", step) from exc
    known = set(names)
    unknown = sorted(free_names(tree) - known)
    if unknown:
        raise ConditionError(
            workflow,
            f"`when` names {', '.join(map(repr, unknown))}, which is neither `inputs` nor a "
            f"dependency of the step (known: {', '.join(sorted(known))})",
            step,
        )


def evaluate(expr: str, values: dict[str, Any]) -> bool:
    """The condition's truth over ``values`` (JSON data by name); ConditionFailed if it cannot
    be evaluated."""
    return bool(value_of(expr, values))


def value_of(expr: str, values: dict[str, Any]) -> Any:
    """The expression's value (a CEL value) over ``values`` (JSON data by name);
    ConditionFailed if it cannot be evaluated."""
    activation = {name: json_to_cel(value) for name, value in values.items()}
    try:
        result = _program(expr).evaluate(activation)
    except CELEvalError as exc:
        raise ConditionFailed(str(exc)) from exc
    if isinstance(result, CELEvalError):
        raise ConditionFailed(str(result.args[0] if result.args else result))
    return result


def check_names(expr: str, names: Iterable[str]) -> str | None:
    """What is wrong with ``expr`` as an expression over ``names`` (it does not parse, or it
    reads another name), or None when nothing is."""
    try:
        tree = _parse(expr)
    except CELParseError as exc:
        return f"does not parse as CEL: {exc}"
    unknown = sorted(free_names(tree) - set(names))
    if unknown:
        known = ", ".join(sorted(names))
        return f"names {', '.join(map(repr, unknown))}, which it cannot read (known: {known})"
    return None


def free_names(tree: Tree[Any]) -> set[str]:
    """The identifiers an expression reads, less the variables its macros bind."""
    found: set[str] = set()
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "ident":
            found.update(str(t) for t in node.children if isinstance(t, Token))
        elif node.data == "member_dot_arg" and _method(node) in MACROS:
            bound.update(_first_arg_names(node))
    return found - bound


def _method(node: Tree[Any]) -> str:
    names = [str(t) for t in node.children if isinstance(t, Token)]
    return names[0] if names else ""


def _first_arg_names(node: Tree[Any]) -> set[str]:
    args = next((c for c in node.children if isinstance(c, Tree) and c.data == "exprlist"), None)
    if args is None or not args.children:
        return set()
    first = args.children[0]
    return {
        str(t)
        for sub in first.iter_subtrees()
        if sub.data == "ident"
        for t in sub.children
        if isinstance(t, Token)
    }


@lru_cache(maxsize=512)
def _parse(expr: str) -> Any:
    return _ENV.compile(expr)


@lru_cache(maxsize=512)
def _program(expr: str) -> Any:
    return _ENV.program(_parse(expr))

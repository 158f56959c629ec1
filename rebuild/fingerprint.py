"""The code fingerprint of a projection: a change means the next run is full.

It covers the function's source and decorator, the plain constants it reads (``return SQL``, a
closure's ``sql``) and the source of the functions of its own module it calls, plus the metadata the
caller gives. Comments, docstrings and formatting do not count: the Python is read as its syntax tree
writes it back (``ast.unparse``), and the SQL the function returns as written as DuckDB parses it.
Views built before that carry the fingerprint of the text as written (``logic=False``). Nor does the
order of the ``consumes=`` and ``streams=`` lists written in the decorator count, or a name given twice.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import os
import re
import threading
from collections.abc import Callable
from types import CodeType
from typing import Any

import duckdb


def code_fingerprint(func: Callable[..., Any], meta: str, logic: bool = True, order_free: bool = True) -> str:
    """16 hex digits of ``func``'s code (with ``logic``: its logic; else its text as written) and ``meta``;
    without ``order_free``, its decorators' ``ORDER_FREE`` lists count as written, as before 2026-11-25."""
    try:
        source: str | None = inspect.getsource(func)
    except (OSError, TypeError):  # defined by exec() or on stdin: no source, but its compiled code changes
        source = None
    if source is not None:
        text = _logic(source, order_free) if logic else source
    else:
        code = getattr(func, "__code__", None)
        text = _code_text(code) if code is not None else getattr(func, "__qualname__", repr(func))
    return hashlib.sha256((text + meta + _referenced(func, source, logic, order_free)).encode()).hexdigest()[:16]


def _referenced(func: Callable[..., Any], source: str | None, logic: bool, order_free: bool,
                seen: set[int] | None = None) -> str:
    """What the function (of ``source``) uses besides its own source: the values of the plain constants
    it names (``return SQL``, a closure's ``sql``) and the source of the functions of its module that
    it calls (with ``logic``: as ``_logic`` gives them, and a constant it only returns as ``_sql``
    does), so that editing those changes the fingerprint too. Empty when it uses none."""
    code, seen = getattr(func, "__code__", None), seen if seen is not None else set()
    if code is None or id(code) in seen:
        return ""
    seen.add(id(code))
    scope = dict(getattr(func, "__globals__", {}))
    for name, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or (), strict=False):
        try:
            scope[name] = cell.cell_contents
        except ValueError:  # a cell not filled yet
            continue
    returned = _returned_names(source) if logic and source is not None else frozenset()
    parts = []
    for name in sorted(_names(code)):
        value = scope.get(name, _MISSING)
        if _plain(value):
            parts.append(f"\n{name} = {_sql(value) if name in returned and isinstance(value, str) else repr(value)}")
        elif inspect.isfunction(value) and value.__module__ == getattr(func, "__module__", None):
            try:
                called = inspect.getsource(value)
                parts.append("\n" + (_logic(called, order_free) if logic else called)
                             + _referenced(value, called, logic, order_free, seen))
            except (OSError, TypeError):
                continue
    return "".join(parts)


_MISSING = object()


def _parse(source: str) -> ast.Module | None:
    """A function's source as a tree; None when it does not parse alone (a lambda's line, cut from a larger expression)."""
    try:
        return ast.parse(source if not source[:1].isspace() else "if 1:\n" + source)  # a method or nested function
    except SyntaxError:
        return None


@functools.lru_cache(maxsize=256)
def _logic(source: str, order_free: bool = True) -> str:
    """A function's source without what does not change what it does: comments, docstrings, formatting,
    and the same in the SQL it returns as written (``_sql``); the source as it is when it does not parse.
    Other text counts as written: code may edit it (``sql.replace("GROUP BY", ...)``)."""
    tree = _parse(source)
    if tree is None:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            node.value.value = _sql(node.value.value)
        if order_free and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            _order_free(node.decorator_list)
    return ast.unparse(tree)


#: the decorator's lists whose order (and a name given twice) changes nothing: the lake is filtered by them
ORDER_FREE = ("consumes", "streams")


def _order_free(decorators: list[ast.expr]) -> None:
    """The ``ORDER_FREE`` lists of text written in the decorators sorted, each name once; a sorted list of
    distinct names is left as it is, so its fingerprint stays what it was."""
    for keyword in (k for d in decorators if isinstance(d, ast.Call) for k in d.keywords if k.arg in ORDER_FREE):
        names = keyword.value
        if isinstance(names, ast.List | ast.Tuple | ast.Set):
            texts = [n for n in names.elts if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            by_text = {str(n.value): n for n in texts}
            if len(texts) == len(names.elts):
                names.elts = [by_text[text] for text in sorted(by_text)]


@functools.lru_cache(maxsize=256)
def _returned_names(source: str) -> frozenset[str]:
    """The names a function's source uses only as ``return NAME``: their text is the SQL it returns as written."""
    tree = _parse(source)
    if tree is None:
        return frozenset()
    returns = {id(r.value): r.value.id for r in ast.walk(tree) if isinstance(r, ast.Return) and isinstance(r.value, ast.Name)}
    elsewhere = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in returns}
    return frozenset(returns.values()) - elsewhere


_SELECT = re.compile(r"\bselect\b", re.IGNORECASE)
_PARSER: tuple[int, duckdb.DuckDBPyConnection] | None = None
_PARSER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1024)
def _sql(text: str) -> str:
    """A SQL query as its parse tree (DuckDB's ``json_serialize_sql``, without where each token was), so
    that its comments, line breaks and keywords' case do not count; text that does not parse, as it is."""
    global _PARSER
    if not _SELECT.search(text):
        return repr(text)
    with _PARSER_LOCK:  # one connection (opening one costs ~40 ms), used by one thread at a time
        if _PARSER is None or _PARSER[0] != os.getpid():  # not a connection a fork copied
            _PARSER = (os.getpid(), duckdb.connect())
        tree = json.loads(_PARSER[1].execute("SELECT json_serialize_sql($1)", [text]).fetchall()[0][0])
    return repr(text) if tree.get("error") else json.dumps(_placeless(tree["statements"]), sort_keys=True)


def _placeless(tree: Any) -> Any:
    """A parse tree without where each node was in the text."""
    if isinstance(tree, dict):
        return {k: _placeless(v) for k, v in tree.items() if k not in ("query_location", "query_location_length")}
    return [_placeless(v) for v in tree] if isinstance(tree, list) else tree


def _names(code: Any) -> set[str]:
    """Global and free names used by ``code`` and the code nested in it (lambdas, comprehensions)."""
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names


def _plain(value: object) -> bool:
    """Text, numbers and containers of them: their repr is the same in every process."""
    if value is None or isinstance(value, str | bytes | int | float):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def _code_text(code: CodeType) -> str:
    """A compiled function as text, the same in every process (marshal's bytes may differ by references)."""
    consts = tuple(_code_text(c) if isinstance(c, CodeType) else repr(c) for c in code.co_consts)
    return repr((code.co_code, code.co_names, code.co_varnames, consts))

"""Projections: pure functions from events to view rows, with the metadata a rebuild needs.

    @projection(name="order_summary", version=1, key="order_id", consumes=[...])
    def order_summary() -> str:
        return "SELECT partition_key AS order_id, ... FROM events GROUP BY ALL"

A DuckDB projection returns SQL reading the relation ``events`` (or takes the relation and
returns one); a Polars projection maps a LazyFrame to a LazyFrame; a Python fold (the slow
escape hatch) maps one partition's ordered events to rows. Events arrive filtered to
``consumes``/``streams``, with the payload fields of ``payload`` as typed columns.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb

from lake.schema import ENVELOPE_COLUMNS
from rebuild.errors import ProjectionError
from rebuild.fingerprint import code_fingerprint

log = logging.getLogger(__name__)

Engine = Literal["duckdb", "polars", "python"]
Strategy = Literal["full", "by_key", "merge", "by_window"]
ENGINES = ("duckdb", "polars", "python")
STRATEGIES = ("full", "by_key", "merge", "by_window")
#: the order a Polars projection's events come in (rebuild.replay), part of its fingerprint: before 2026-11-25 they
#: came in file order, and a view built then is rebuilt in full once (``Projection.unordered_fingerprints``)
POLARS_ORDER = " events by (partition_key, sequence, event_id)"


@dataclass(frozen=True)
class Era:
    """How the workbenches of a time made a projection's fingerprint (``Projection._fingerprint``). A view's
    checkpoint keeps the fingerprint of its era: an earlier era's names the same code, whose views are caught
    up, except for the engines whose results changed since (``rebuilt``), whose views are rebuilt in full once."""

    logic: bool  # comments, docstrings and formatting do not count (else: the code's text as written)
    order_free: bool  # the consumes= and streams= lists count as sets (else: as given)
    polars_ordered: bool  # a Polars projection's fingerprint names the order its events come in (POLARS_ORDER)
    rebuilt: tuple[Engine, ...] = ()


#: oldest first; the last is today's, and its fingerprints are the projections' own
ERAS = (
    Era(logic=False, order_free=False, polars_ordered=False, rebuilt=("polars",)),  # the code's text, to 2026-11-24 12:40 UTC
    Era(logic=True, order_free=False, polars_ordered=False, rebuilt=("polars",)),  # its logic, to 2026-11-24 23:45
    Era(logic=True, order_free=True, polars_ordered=False, rebuilt=("polars",)),  # sorted lists, to 2026-11-25 03:30
    Era(logic=True, order_free=True, polars_ordered=True),
)
MERGE_OPS = ("sum", "min", "max")
#: the keys of ``thresholds`` and ``expectations`` that ``checks`` reads (``checks.verdict.DEFAULTS``,
#: ``checks.expect.KINDS``; a test keeps them equal): named here so that a typo is refused when the
#: projection is defined, not by `rebuild check` after the whole run, and without importing ``checks``
THRESHOLDS = ("max_changed_fraction", "columns", "max_only_in_live", "max_only_in_rebuilt", "max_duplicate_keys",
              "allow_schema_changes", "expectations", "row_count_tolerance")
EXPECTATION_KINDS = ("not_null", "between", "in_set")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Window:
    """An event-time window: the view column holding the window start, and its size."""

    column: str = "day"
    size: str = "1 day"


@dataclass(frozen=True)
class Projection:
    """A registered projection; ``fingerprint`` changes whenever its code or metadata does."""

    name: str
    version: int
    key: tuple[str, ...]
    func: Callable[..., Any]
    engine: Engine = "duckdb"
    incremental: Strategy = "by_key"
    consumes: tuple[str, ...] | None = None
    streams: tuple[str, ...] | None = None
    payload: dict[str, str] = field(default_factory=dict)
    output: dict[str, str] | None = None
    window: Window | None = None
    merge: dict[str, str] | None = None
    expectations: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def fingerprint(self) -> str:
        """Of the code's logic: comments, docstrings and formatting of its Python, and of the SQL it
        returns as written (``return 'SELECT ...'``, ``return SQL``), do not count."""
        return self._fingerprint(ERAS[-1])

    @property
    def legacy_fingerprint(self) -> str:
        """Of the code's text as written, every comment counting: the fingerprint of the views built
        before 2026-11-24."""
        return self._fingerprint(ERAS[0])

    @property
    def earlier_fingerprints(self) -> tuple[str, ...]:
        """The fingerprints earlier workbenches gave this same code, which stay current for the views (and
        backfills) they made: those of the eras after which its results stayed the same."""
        return self._earlier(rebuilt=False)

    @property
    def unordered_fingerprints(self) -> tuple[str, ...]:
        """The fingerprints earlier workbenches gave this same code when it gave other results: a Polars
        projection's before 2026-11-25, when its events came in the lake's file order (``first()``/``last()``
        per key took any event). The views they built are rebuilt in full once."""
        return self._earlier(rebuilt=True)

    def built_by(self, fingerprint: str) -> bool:
        """Whether a view built by code of ``fingerprint`` was built by this code (its logic)."""
        return fingerprint == self.fingerprint or fingerprint in self.earlier_fingerprints

    def _earlier(self, rebuilt: bool) -> tuple[str, ...]:
        """The distinct fingerprints of the earlier eras whose views are (or are not) ``rebuilt`` for this engine."""
        found = (self._fingerprint(era) for era in ERAS[:-1] if (self.engine in era.rebuilt) == rebuilt)
        return tuple(dict.fromkeys(f for f in found if f != self.fingerprint))

    def _fingerprint(self, era: Era) -> str:
        consumes, streams = self.consumes, self.streams
        if era.logic and era.order_free:  # the lake is filtered by them as by sets; before, they counted as given
            consumes, streams = _sorted_once(consumes), _sorted_once(streams)
        meta = repr((self.version, self.key, self.engine, self.incremental, consumes, streams,
                     sorted(self.payload.items()), self.window, self.merge, sorted((self.output or {}).items())))
        if self.engine == "polars" and era.polars_ordered:
            meta += POLARS_ORDER
        return code_fingerprint(self.func, meta, era.logic, era.order_free)

    @property
    def partition_column(self) -> str:
        """For by_key projections: the view column that holds the partition key."""
        return self.key[0]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "key": list(self.key),
            "engine": self.engine,
            "incremental": self.incremental,
            "consumes": list(self.consumes) if self.consumes else None,
            "streams": list(self.streams) if self.streams else None,
            "fingerprint": self.fingerprint,
            "description": self.description,
        }


def _check(p: Projection) -> None:
    problems = []
    if not _NAME.match(p.name):
        problems.append("name must be lower_snake_case (letters, digits, _; at most 63)")
    if p.engine not in ENGINES:
        problems.append(f"engine {p.engine!r} is not one of {list(ENGINES)}")
    if p.incremental not in STRATEGIES:
        problems.append(f"incremental {p.incremental!r} is not one of {list(STRATEGIES)}")
    if isinstance(p.version, bool) or not isinstance(p.version, int):
        problems.append(f"version must be an integer, not {p.version!r}")
    if not p.key or not all(isinstance(k, str) for k in p.key):
        problems.append("key must name at least one view column")
    for what, names, kind in (("consumes", p.consumes, "event types"), ("streams", p.streams, "streams")):
        if names and not all(isinstance(n, str) and n for n in names):
            problems.append(f"{what} must name {kind} as text, not {list(names)!r}")
    if p.window is not None and not isinstance(p.window, Window):
        problems.append(f"window must be a Window(column, size), not {p.window!r}")
    elif p.incremental == "by_window" and (p.window is None or p.window.column not in p.key):
        problems.append("by_window needs window=Window(column=...) naming one of the key columns")
    elif p.window is not None and not _is_interval(p.window.size):
        problems.append(f"window size {p.window.size!r} is not a positive interval such as '1 day' or '6 hours'")
    for what, types in (("payload", p.payload), ("output", p.output or {})):
        wrong = {c: t for c, t in types.items() if not _is_type(t)}
        if wrong:
            problems.append(f"{what} types {wrong} are not DuckDB types (VARCHAR, BIGINT, DECIMAL(18,2), ...)")
    problems += _payload_names(p.payload)
    if p.incremental == "merge":
        ops = p.merge or {}
        if not ops or any(op not in MERGE_OPS for op in ops.values()):
            problems.append(f"merge needs merge={{column: op}} with ops in {list(MERGE_OPS)}")
    if p.engine == "python" and p.incremental not in ("by_key", "full"):
        problems.append("a Python fold is per partition: use incremental='by_key' or 'full'")
    problems += _check_names(p)
    if problems:
        raise ProjectionError(f"projection {p.name!r}: " + "; ".join(problems), projection=p.name)


def _check_names(p: Projection) -> list[str]:
    """Threshold and expectation names ``rebuild check`` would refuse (a typo), found when the projection is defined."""
    problems = []
    if unknown := sorted(str(k) for k in p.thresholds if k not in THRESHOLDS):
        problems.append(f"unknown thresholds {unknown}; known: {sorted(THRESHOLDS)}")
    if p.thresholds.get("expectations", "fail") not in ("fail", "warn"):
        problems.append(f"threshold expectations must be 'fail' or 'warn', not {p.thresholds['expectations']!r}")
    if unknown := sorted(str(k) for k in p.expectations if k not in EXPECTATION_KINDS):
        problems.append(f"unknown expectation kinds {unknown}; known: {list(EXPECTATION_KINDS)}")
    return problems


def _payload_names(payload: dict[str, str]) -> list[str]:
    """Payload fields become columns beside the envelope's, and DuckDB's column names ignore case."""
    problems = []
    clash = sorted(f for f in payload if str(f).lower() in ENVELOPE_COLUMNS)
    if clash:
        problems.append(f"payload fields {clash} have the name of envelope columns (DuckDB's column names ignore "
                        f"case): read them from the payload's JSON instead (json_extract(payload, '$.{clash[0]}'))")
    by_case: dict[str, list[str]] = {}
    for f in payload:
        by_case.setdefault(str(f).lower(), []).append(f)
    for same in (sorted(names) for names in by_case.values() if len(names) > 1):
        problems.append(f"payload fields {same} differ only by case, which DuckDB's column names ignore: declare one "
                        f"and read the other from the payload's JSON (json_extract(payload, '$.{same[-1]}'))")
    return problems


def _is_type(text: object) -> bool:
    try:
        return isinstance(text, str) and bool(duckdb.sqltype(text))
    except duckdb.Error:
        return False


def _is_interval(text: object) -> bool:
    try:
        with duckdb.connect() as con:
            row = con.execute("SELECT CAST($1 AS INTERVAL) > INTERVAL 0 SECOND", [text]).fetchone()
        return isinstance(text, str) and row is not None and bool(row[0])
    except duckdb.Error:
        return False


#: aggregates that accumulate over the events: a merge view's column made with one needs a merge op,
#: or a catch-up gives it the new events' value alone (a count of 373 became 155), without an error
ACCUMULATING = {"count": "count", "count_star": "count(*)", "sum": "sum", "min": "min", "max": "max", "avg": "avg",
                "mean": "mean", "list": "list", "array_agg": "array_agg", "string_agg": "string_agg"}


def unmerged_aggregates(con: duckdb.DuckDBPyConnection, projection: Projection) -> dict[str, str]:
    """The columns of a SQL ``merge`` projection made with an accumulating aggregate but given no merge
    op, each with the aggregate, as DuckDB (``con``: the run's, a new one costs ~24 ms, at every bucket
    of a bucketed run) parses its SQL: empty for a relation, Polars or a fold."""
    if projection.incremental != "merge" or projection.engine != "duckdb" or inspect.signature(projection.func).parameters:
        return {}
    sql = projection.func()
    tree = json.loads(con.execute("SELECT json_serialize_sql($1)", [str(sql)]).fetchall()[0][0])
    node = {} if tree.get("error") else tree["statements"][0]["node"]
    given = {c.lower() for c in (*(projection.merge or {}), *projection.key)}
    found = {}
    for item in node.get("select_list", []) if node.get("type") == "SELECT_NODE" else []:
        name = item.get("alias") or (item.get("column_names") or [""])[-1]
        aggregate = _accumulating(item)
        if aggregate and name.lower() not in given:
            found[name] = aggregate
    return found


def _accumulating(expression: object) -> str | None:
    """The first accumulating aggregate in a parsed expression, outside window functions and subqueries."""
    if isinstance(expression, list):
        return next((a for a in map(_accumulating, expression) if a), None)
    if not isinstance(expression, dict) or expression.get("class") in ("WINDOW", "SUBQUERY"):
        return None
    if expression.get("class") == "FUNCTION" and expression.get("function_name") in ACCUMULATING:
        return ACCUMULATING[expression["function_name"]]
    return next((a for a in map(_accumulating, expression.values()) if a), None)


class Registry:
    """Projections by name. Registering another projection under a taken name is an error."""

    def __init__(self) -> None:
        self._items: dict[str, Projection] = {}

    def add(self, p: Projection) -> Projection:
        _check(p)
        old = self._items.get(p.name)
        if old is not None and _origin(old.func) != _origin(p.func):
            raise ProjectionError(
                f"projection {p.name!r} is defined twice ({_where(old.func)} and {_where(p.func)}); "
                "rename one of them",
                projection=p.name,
            )
        self._items[p.name] = p  # the same definition re-run (a notebook cell) replaces itself
        return p

    def get(self, name: str) -> Projection:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none loaded"
            raise ProjectionError(
                f"unknown projection {name!r}; known: {known}. List modules under [projections] "
                "modules in workbench.toml",
                projection=name,
            ) from None

    def __iter__(self) -> Iterable[Projection]:  # type: ignore[override]
        return iter(sorted(self._items.values(), key=lambda p: p.name))

    def __len__(self) -> int:
        return len(self._items)

    def reload(self, module: str, load: Callable[[], object]) -> None:
        """Run ``load`` (``module`` imported again) without the projections ``module`` defined before, so one
        it no longer defines is gone; when ``load`` fails, they are back as they were."""
        kept = dict(self._items)
        self._items = {n: p for n, p in kept.items() if getattr(p.func, "__module__", None) != module}
        try:
            load()
        except BaseException:
            self._items = kept
            raise

    def __contains__(self, name: object) -> bool:
        return name in self._items


def _origin(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"


def _where(func: Callable[..., Any]) -> str:
    """Where a function was defined, for people: a module loaded from a ``.py`` path has a made-up name."""
    module, name = getattr(func, "__module__", None) or "?", getattr(func, "__qualname__", "?")
    shown = name if module.startswith(_FILE_MODULE) else f"{module}.{name}"
    code = getattr(func, "__code__", None)
    return f"{shown} at {code.co_filename}:{code.co_firstlineno}" if code is not None else shown


#: Every projection decorated anywhere in the process lands here; a Workbench picks its own.
REGISTRY = Registry()


def projection(
    *,
    name: str,
    key: str | Sequence[str],
    version: int = 1,
    consumes: str | Sequence[str] | None = None,
    streams: str | Sequence[str] | None = None,
    engine: Engine = "duckdb",
    incremental: Strategy | None = None,
    payload: dict[str, str] | None = None,
    output: dict[str, str] | None = None,
    window: Window | None = None,
    merge: dict[str, str] | None = None,
    expectations: dict[str, Any] | None = None,
    thresholds: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> Callable[[Callable[..., Any]], Projection]:
    """Declare a projection. ``payload`` maps payload fields to DuckDB types (decoded once)."""

    def decorate(func: Callable[..., Any]) -> Projection:
        def mapping(option: str, value: Any) -> dict[str, Any]:
            """A dict option as a dict: a list there failed with Python's 'dictionary update sequence'."""
            if not isinstance(value, Mapping):
                raise ProjectionError(f"projection {name!r}: {option} must be a dict (name: value), not "
                                      f"{type(value).__name__} {value!r}", projection=name)
            return dict(value)

        p = Projection(
            name=name,
            version=version,
            key=(key,) if isinstance(key, str) else tuple(key),
            func=func,
            engine=engine,
            incremental=incremental or "by_key",
            consumes=_names_of(consumes),
            streams=_names_of(streams),
            payload=mapping("payload", payload or {}),
            output=mapping("output", output) if output else None,
            window=window,
            merge=mapping("merge", merge) if merge else None,
            expectations=mapping("expectations", expectations or {}),
            thresholds=mapping("thresholds", thresholds or {}),
            description=(inspect.getdoc(func) or "").split("\n\n")[0],
        )
        return (registry if registry is not None else REGISTRY).add(p)

    return decorate


def _sorted_once(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``names`` sorted, each once: a sorted tuple of distinct names is itself, so its fingerprint stays."""
    return tuple(sorted(set(names))) if names else names


def _names_of(names: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """One name or several: ``consumes="OrderPlaced"`` is one event type, not eleven letters."""
    if not names:
        return None
    return (names,) if isinstance(names, str) else tuple(names)


def load_modules(modules: Sequence[str]) -> None:
    """Import projection modules by dotted name or ``.py`` path; errors name the module.

    A module imported before is imported again when its file changed since (an analyst edited it while
    the notebook's kernel ran): the projections then run the code the file holds now, of which their
    fingerprints are made (``inspect`` reads the file as it is), not the code imported in the morning."""
    for spec in modules:
        try:
            if spec.endswith(".py"):
                _import_file(Path(spec))
            else:
                _import_name(spec)
        except ProjectionError:
            raise
        except Exception as exc:
            raise _load_error(spec, exc) from exc


def _load_error(spec: str, exc: Exception) -> ProjectionError:
    """The module is not there (a typo in the config), or its own code failed (a bug in it, or a
    package it imports that is not installed): say which, and where."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and (spec == exc.name or spec.startswith(exc.name + ".")):
        return ProjectionError(f"cannot load projection module {spec!r}: {exc}; {_CONFIGURED}", module=spec)
    where = f" (at {exc.filename}:{exc.lineno})" if isinstance(exc, SyntaxError) else user_frame(exc)
    return ProjectionError(f"projection module {spec!r} failed while it was imported: {type(exc).__name__}: {exc}"
                           f"{where}; fix the module", module=spec)


_CONFIGURED = "check [projections] modules in workbench.toml"


def user_frame(exc: BaseException) -> str:
    """`` (at FILE:LINE in FUNC)``: the innermost frame of ``exc`` in the user's own code (not in
    the standard library, an installed package or this package), or ``""`` when there is none."""
    ours = [str(Path(__file__).parent)] + [sysconfig.get_path(p) for p in ("stdlib", "purelib", "platlib")]
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(tuple(ours))]
    if not frames:  # raised in a worker process (a fold), which noted the place before its frames were lost
        return str(getattr(exc, "_user_frame", ""))
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno} in {f.name})"


_FILE_MODULE = "workbench_projections_"


#: the text (its hash) of each projection module's file when it was imported: module name -> hash
_IMPORTED: dict[str, str] = {}


def _file_hash(path: str | None) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:  # gone or unreadable: importing it again says so
        return "unreadable"


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise ProjectionError(f"cannot load projection module {str(path)!r}: no such file; {_CONFIGURED}", module=str(path))
    name = _FILE_MODULE + hashlib.md5(str(path.resolve()).encode()).hexdigest()[:8]
    text = _file_hash(str(path))
    if name in sys.modules and _IMPORTED.get(name) == text:
        return

    def load() -> None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)

    _import_again(name, load, text, str(path))


def _import_name(name: str) -> None:
    module = sys.modules.get(name)
    if module is None:
        importlib.import_module(name)
        _IMPORTED[name] = _file_hash(getattr(sys.modules[name], "__file__", None)) or ""
        return
    text = _file_hash(getattr(module, "__file__", None))
    if text is None or _IMPORTED.setdefault(name, text) == text:  # imported elsewhere first: its file as it is now
        return
    _import_again(name, lambda: importlib.reload(module), text, name)


def _import_again(name: str, load: Callable[[], object], text: str | None, shown: str) -> None:
    """Import module ``name`` (again, when it was: its file changed) and remember its file's ``text``."""
    if name in _IMPORTED:
        log.info("projection module %s changed since it was imported; importing it again", shown)
    REGISTRY.reload(name, load)
    _IMPORTED[name] = text or ""

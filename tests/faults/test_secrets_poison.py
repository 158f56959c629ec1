"""Secrets never leak; poison events are data you can query, count and measure the effect of.

- A PostgreSQL store URI with a password (the pgserver of tests/pg.py accepts any password; a
  wrong password is tried against an unreachable server): the password is absent from logs at
  DEBUG (caplog and the CLI's stderr with -vv), stdout, ``--json`` output, errors and report files.
- Quarantined records: ``lake.read_quarantine`` rows with reasons, counted by the audit and the
  check report; ``--exclude-quarantined`` plus ``rebuild check`` show what the poison keys do to live.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import lake
from lake.audit import audit
from rebuild import Config, StoreError, Workbench
from rebuild.cli import main
from rebuild.store import open_store
from tests.faults.conftest import VIEW, load_json, run_cli

SECRET = "s3cret-Pa55w0rd"


def _with_password(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    user_host = rest.split("@", 1)
    user = user_host[0].split(":", 1)[0] if len(user_host) == 2 else "postgres"
    tail = user_host[1] if len(user_host) == 2 else rest
    return f"{scheme}://{user}:{SECRET}@{tail}"


@pytest.mark.postgres
def test_a_store_password_never_appears(fault_lake: lake.Lake, postgres_uri: str, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    store = _with_password(postgres_uri)
    assert SECRET in store
    caplog.set_level(logging.DEBUG)
    config = tmp_path / "workbench.toml"
    config.write_text(f'[reports]\ndir = "{tmp_path / "reports"}"\n')
    outputs = []
    for args in (["run", VIEW], ["ls"], ["plan", VIEW], ["check", VIEW], ["runs", VIEW], ["cutover", VIEW, "--force"]):
        main(["--config", str(config), "--lake", fault_lake.uri, "--store", store, "-vv", "--json", *args])
        captured = capsys.readouterr()
        outputs += [captured.out, captured.err]
    with Workbench(Config(lake_uri=fault_lake.uri, store_uri=store)) as wb:
        outputs += [repr(wb.store), json.dumps(wb.config.redacted())]
    cli = run_cli(fault_lake.uri, store, "-vv", "--json", "runs", VIEW)
    outputs += [cli.stdout, cli.stderr, caplog.text]
    outputs += [p.read_text() for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert len(outputs) > 10 and all(SECRET not in text for text in outputs)
    assert any("***" in text for text in outputs)


@pytest.mark.parametrize("uri", [
    f"postgresql://app:{SECRET}@127.0.0.1:1/shop",
    f"postgresql://app@127.0.0.1:1/shop?password={SECRET}",
])
def test_a_wrong_or_unreachable_login_hides_the_password(uri: str, fault_lake: lake.Lake,
                                                         caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreError) as failed:
        open_store(uri)
    assert SECRET not in str(failed.value) and SECRET not in repr(failed.value.context)  # type: ignore[attr-defined]
    assert main(["--lake", fault_lake.uri, "--store", uri, "-vv", "--json", "run", VIEW]) == 2
    out = capsys.readouterr()
    error = load_json(out.out)
    assert "cannot connect" in error["error"] and error["retryable"] is True  # no server answered: a job may retry
    assert SECRET not in out.out + out.err + caplog.text
    cli = run_cli(fault_lake.uri, uri, "-vv", "lake", "ingest", "--from-postgres", uri, "--table", "events",
                  "--stream", "orders")
    assert cli.returncode == 2 and SECRET not in cli.stdout + cli.stderr


def test_poison_events_are_data_and_their_effect_is_measured(fault_lake: lake.Lake, tmp_path: Path) -> None:
    quarantined = lake.read_quarantine(fault_lake)
    reasons = dict(quarantined.aggregate("reason, count(*)").fetchall())
    assert sum(reasons.values()) == 2 and any("sequence" in r for r in reasons)
    poisoned = [r[0] for r in quarantined.filter("partition_key IS NOT NULL").aggregate("partition_key").fetchall()]
    assert poisoned == ["o-0000007"]
    assert audit(fault_lake).to_dict()["quarantined"] == 2
    config = Config(lake_uri=fault_lake.uri, store_uri=str(tmp_path / "views.duckdb"), reports_dir=str(tmp_path / "r"))
    with Workbench(config) as wb:
        wb.run(VIEW, progress="none")
        wb.cutover(VIEW, force=True)
        what_if = wb.run(VIEW, full=True, exclude_quarantined=True, progress="none")
        assert what_if.record.rows_written == 119
        report = wb.check(VIEW)  # the shadow without the poison keys against live with them
        assert report.diff.only_in_live == 1 and not report.passed
        assert report.to_dict()["audit"]["quarantined"] == 2
        assert "o-0000007" in json.dumps(report.to_dict(), default=str)

"""``rebuild demo``: one JSON object on --json, and it never deletes anything outside .demo/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebuild.cli import main
from rebuild.demo import inside_demo_folder


def test_demo_prints_one_json_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                     caplog: pytest.LogCaptureFixture) -> None:
    """And shows no progress under --json, as every command: its check logged a line per step."""
    monkeypatch.chdir(tmp_path)  # no workbench.toml: the defaults, nothing written to the repository
    target = tmp_path / ".demo" / "lake"
    assert main(["--lake", str(target), "demo", "--events", "5000", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    sample, audit = result["steps"]["sample"], result["steps"]["audit"]
    assert sample["events_generated"] == 5000 and audit["events"] == sample["archived"]
    assert (audit["gaps"], audit["conflicts"]) == (sample["gaps"], sample["conflicts"])
    assert result["steps"]["reset"]["removed"] is False and (target / "events").is_dir()
    assert [r.getMessage() for r in caplog.records if r.name == "rebuild.progress"] == []


def test_demo_refuses_to_delete_outside_a_demo_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    precious = tmp_path / "data" / "lake"
    precious.mkdir(parents=True)
    (precious / "keep.txt").write_text("mine")
    assert main(["--lake", str(precious), "demo", "--events", "500", "--json"]) == 2
    assert "not inside a .demo folder" in json.loads(capsys.readouterr().out)["error"]
    stray = tmp_path / ".demo" / "lake"
    stray.mkdir(parents=True)
    (stray / "notes.txt").write_text("mine")
    assert main(["--lake", str(stray), "demo", "--events", "500", "--json"]) == 2
    assert (precious / "keep.txt").exists() and (stray / "notes.txt").exists()


def test_demo_in_a_project_whose_lake_is_not_made_yet_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's installed wheel: `rebuild demo` run in a project's folder, next to a workbench.toml whose
    lake was not made yet, wrote a sample lake where the project's lake goes and a faulty live order_summary
    into the project's store, then failed (exit 2) on the project's projections, leaving both behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "workbench.toml").write_text('[lake]\nuri = "lake"\n[store]\nuri = "duckdb://views.duckdb"\n'
                                             '[projections]\nmodules = ["mine"]\n')
    assert main(["demo", "--events", "500", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert f"lake {tmp_path / 'lake'}; store duckdb://{tmp_path / 'views.duckdb'}; [projections] modules" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workbench.toml"]


def test_the_demos_next_steps_name_make_lab_only_in_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's last line said to open notebooks/ with `make lab`, which a project that installed the
    wheel has neither of."""
    import io

    import lake
    from rich.console import Console

    from rebuild.demo import DemoContext, _render

    def said() -> str:
        console = Console(file=io.StringIO(), width=300)
        _render(console, DemoContext(state=None, lake=lake.Lake(tmp_path / "lake"), events=0, seed=0), 1.0)  # type: ignore[arg-type]
        return console.file.getvalue()  # type: ignore[attr-defined]

    monkeypatch.chdir(tmp_path)
    assert "make lab" not in said() and "`rebuild ls`" in said()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "Makefile").write_text("lab:\n")
    assert "open notebooks/ with `make lab`" in said()


def test_inside_demo_folder() -> None:
    assert inside_demo_folder(Path("/x/.demo/lake")) and inside_demo_folder(Path("/x/.demo/a/b"))
    assert not inside_demo_folder(Path("/x/.demo")) and not inside_demo_folder(Path("/x/demo/lake"))


def test_demo_resets_a_lake_that_a_distributed_run_staged_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `rebuild run VIEW --full --executor processes` leaves {lake}/_staging/VIEW/ behind (empty);
    # the next `make demo` refused to reset its own lake because of it
    monkeypatch.chdir(tmp_path)
    target = tmp_path / ".demo" / "lake"
    (target / "events").mkdir(parents=True)
    (target / "_staging" / "order_summary").mkdir(parents=True)
    assert main(["--lake", str(target), "demo", "--events", "500", "--json"]) == 0, capsys.readouterr().out
    assert json.loads(capsys.readouterr().out)["steps"]["reset"]["removed"] is True


def test_demo_resets_a_parquet_store_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The reset removed a DuckDB store only: a Parquet store under .demo/ kept the earlier demo's runs."""
    monkeypatch.chdir(tmp_path)
    target, store = tmp_path / ".demo" / "lake", tmp_path / ".demo" / "views"
    (target / "events").mkdir(parents=True)
    store.mkdir()
    (store / "earlier-demo-run").write_text("")
    assert main(["--lake", str(target), "--store", f"parquet://{store}", "demo", "--events", "500", "--json"]) == 0, \
        capsys.readouterr().out
    assert json.loads(capsys.readouterr().out)["steps"]["reset"]["removed"] is True
    assert store.is_dir() and not (store / "earlier-demo-run").exists()

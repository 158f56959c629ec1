"""workbench.toml: defaults < the file < REBUILD_* environment < arguments; relative paths resolve
against the file's folder; a misspelt or malformed setting is an error, never ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lake
from rebuild.cli import main
from rebuild.config import Config
from rebuild.errors import ConfigError, StoreError
from rebuild.workbench import Workbench
from lake.errors import SourceError
from tests.conftest import event, write_ndjson
from tests.orders import order_events

FILE = """
[lake]
uri = "data/lake"
[store]
uri = "duckdb://views/v.duckdb"
[projections]
modules = ["rebuild.examples", "mine/projections.py"]
[duckdb]
memory_limit = "1GB"
temp_directory = "spill"
threads = 2
[reports]
dir = "out/reports"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "project" / "workbench.toml"
    path.parent.mkdir()
    path.write_text(FILE)
    return path


def test_relative_paths_resolve_against_the_files_folder(config_file: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # elsewhere: the working directory must not matter
    c = Config.load(config_file, env={})
    base = config_file.parent
    assert c.lake_uri == str(base / "data/lake")
    assert c.store_uri == f"duckdb://{base / 'views/v.duckdb'}"
    assert c.projection_modules == ("rebuild.examples", str(base / "mine/projections.py"))
    assert (c.memory_limit, c.threads) == ("1GB", 2)
    assert c.temp_directory == str(base / "spill") and c.reports_dir == str(base / "out/reports")
    assert c.source == str(config_file)


def test_the_environment_overrides_the_file_and_arguments_override_both(config_file: Path) -> None:
    env = {"REBUILD_LAKE_URI": "s3://bucket/lake", "REBUILD_STORE_URI": "postgresql://db/views",
           "REBUILD_MEMORY_LIMIT": "3GB"}
    c = Config.load(config_file, env=env)
    assert (c.lake_uri, c.store_uri, c.memory_limit) == ("s3://bucket/lake", "postgresql://db/views", "3GB")
    c = Config.load(config_file, env=env, lake_uri="/abs/lake", memory_limit="5GB")
    assert (c.lake_uri, c.store_uri, c.memory_limit) == ("/abs/lake", "postgresql://db/views", "5GB")


def test_a_misspelt_keyword_override_names_the_known_ones(config_file: Path) -> None:
    """Workbench.open(lake=...), the README's "keyword overrides" guessed from the [lake] section, said only
    "unknown configuration keys ['lake']", not which names it takes."""
    with pytest.raises(ConfigError, match=r"\['lake'\]; known: lake_uri, store_uri, projection_modules, "):
        Config.load(config_file, env={}, lake="/abs/lake")
    assert Config.load(config_file, env={}, lake_uri="/abs/lake").lake_uri == "/abs/lake"


def test_the_file_is_found_by_argument_environment_or_working_directory(config_file: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lake_uri = str(config_file.parent / "data/lake")
    assert Config.load(env={"REBUILD_CONFIG": str(config_file)}).lake_uri == lake_uri
    monkeypatch.chdir(config_file.parent)
    assert Config.load(env={}).lake_uri == lake_uri
    monkeypatch.chdir(tmp_path)  # no workbench.toml here: the embedded default
    assert Config.load(env={}).lake_uri == str(tmp_path / ".demo/lake")
    with pytest.raises(ConfigError, match="nowhere.toml not found"):
        Config.load(tmp_path / "nowhere.toml", env={})
    with pytest.raises(ConfigError, match=f"configuration file {tmp_path} is a folder, not a file"):  # was "not found"
        Config.load(tmp_path, env={})


def _below_project(tmp_path: Path, folder: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A project (its workbench.toml) in ``tmp_path`` and the working directory in its ``folder``."""
    for name in ("REBUILD_CONFIG", "REBUILD_LAKE_URI", "REBUILD_STORE_URI"):
        monkeypatch.delenv(name, raising=False)
    config_file = tmp_path / "workbench.toml"
    config_file.write_text('[lake]\nuri = "lake"\n')
    (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / folder)
    return config_file, tmp_path / folder


def test_a_notebook_below_the_project_is_told_that_its_workbench_toml_is_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """`make lab` runs a notebook's kernel in notebooks/, where Workbench.open() (the README's first line
    "From a notebook") found no workbench.toml and quietly took the default lake notebooks/.demo/lake: the
    project's lake looked missing ("no event lake at ...: create one with `rebuild lake ingest`")."""
    from rebuild import Workbench

    config_file, notebooks = _below_project(tmp_path, "notebooks", monkeypatch)
    with caplog.at_level("WARNING", logger="rebuild.workbench"):
        Workbench.open().close()
    assert f"no workbench.toml in {notebooks}, so the workbench uses the defaults, whose lake {notebooks}/.demo/lake " \
           f"does not exist; open it with Workbench.open('{config_file}')" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rebuild.workbench"):
        Workbench.open(str(config_file)).close()
        Workbench.open(None, lake_uri=str(notebooks / "new-lake")).close()  # a notebook making its own sample lake
    assert caplog.text == ""


def test_a_command_below_the_project_says_its_workbench_toml_is_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """`rebuild lake ingest` run from a folder below the project's (its data/, say) archived into a new
    lake data/.demo/lake, and the commands run there after it read that one, without a word."""
    config_file, data = _below_project(tmp_path, "data", monkeypatch)
    source = write_ndjson(data / "in.ndjson", [event(1)])
    for argv in (["lake", "ingest", str(source), "--stream", "orders"], ["ls"]):
        with caplog.at_level("WARNING", logger="rebuild.cli"):
            assert main(["--json", *argv]) == 0
        assert (f"no workbench.toml in {data}, so the workbench uses the defaults (the lake {data}/.demo/lake); "
                f"the {config_file} above this folder is not read from here: cd to {tmp_path} or give --config "
                f"{config_file}") in caplog.text
        caplog.clear()
    with caplog.at_level("WARNING", logger="rebuild.cli"):
        assert main(["--config", str(config_file), "--json", "ls"]) == 0
    assert "not read from here" not in caplog.text


def test_a_cron_job_started_outside_the_project_says_it_reads_no_workbench_toml(tmp_path: Path) -> None:
    """A crontab line without `cd` or --config runs in its user's home: `lake ingest` archived the night's
    events into a new lake there (~/.demo/lake) with exit 0 and not a line in its log, and the project's
    backfill failed with only "unknown projection ...; list modules under [projections] modules in
    workbench.toml", which sent the on-call to a file that was fine."""
    project, home = tmp_path / "project", tmp_path / "home"
    home.mkdir()
    project.mkdir()
    (project / "workbench.toml").write_text('[lake]\nuri = "lake"\n[projections]\nmodules = ["mine.py"]\n')
    (project / "mine.py").write_text("")
    source = write_ndjson(tmp_path / "in.ndjson", [event(1)])
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}  # cron's: no HOME, LANG or REBUILD_*

    def job(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rebuild", *args, "--json"], cwd=home, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    warning = (f"WARNING rebuild.cli: no workbench.toml in {home}, so the workbench uses the defaults (the lake "
               f"{home}/.demo/lake, the store duckdb://{home}/.demo/views.duckdb, the projections of rebuild.examples); a "
               "job started outside the project's folder (cron starts in its user's home) reads none: give --config "
               "PATH (or $REBUILD_CONFIG) or cd to the project's folder first")
    ingested = job("lake", "ingest", str(source), "--stream", "orders")
    assert ingested.returncode == 0 and warning in ingested.stderr, ingested.stderr
    refused = job("backfill", "mine", "--since", "2026-01-01", "--until", "2026-02-01")
    assert refused.returncode == 2 and warning in refused.stderr.splitlines()[0], refused.stderr
    configured = job("--config", str(project / "workbench.toml"), "lake", "ingest", str(source), "--stream", "orders")
    assert configured.returncode == 0 and configured.stderr == "", configured.stderr


@pytest.mark.parametrize(("text", "message"), [
    ('[lakes]\nuri = "x"\n', r"unknown settings \['lakes'\]; known: \[lake\] storage_options, uri;"),
    ('[lake]\nurl = "x"\n', r"unknown settings \['lake.url'\]"),
    ('[duckdb]\nmemory = "1GB"\n', r"unknown settings \['duckdb.memory'\]"),
    ('lake = "x"\n', r"lake \(a \[lake\] table, not a value\)"),
    ('[lake\nuri = "x"\n', "is not valid TOML"),
    # these were tracebacks (exit 1) from the first DuckDB connection that applied them
    ('[duckdb]\nthreads = "two"\n', r"\[duckdb\] threads in .* must be a whole number >= 1, not 'two'"),
    ('[duckdb]\nmemory_limit = "4 gigs"\n', r"memory_limit '4 gigs' \(\[duckdb\] in .*\) is not a memory size DuckDB "
                                           r"reads: Unknown unit for memory: 'gigs'"),
    # and these where the value was first used: "'int' object is not iterable" and the like, exit 1
    ('[lake]\nuri = 5\n', r"\[lake\] uri in .* must be text, in quotes, not 5"),
    ('[store]\nuri = 5432\n', r"\[store\] uri in .* must be text, in quotes, not 5432"),
    ('[duckdb]\ntemp_directory = ["a"]\n', r"\[duckdb\] temp_directory in .* must be text, in quotes, not \['a'\]"),
    ('[reports]\ndir = 2026\n', r"\[reports\] dir in .* must be text, in quotes, not 2026"),
    ('[projections]\nmodules = 5\n', r"\[projections\] modules in .* must be a module name or a list of them"),
    ('[projections]\nmodules = ["a", 5]\n', r"modules in .* must be a module name or a list of them, in quotes, not"),
    ('[lake]\nstorage_options = "x"\n', r"\[lake\] storage_options in .* must be a table"),
])  # fmt: skip
def test_a_misspelt_or_malformed_setting_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "workbench.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        Config.load(path, env={})
    assert str(path) in str(caught.value)


def test_a_memory_limit_typo_in_the_environment_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REBUILD_MEMORY_LIMIT", "lots")
    assert main(["--json", "ls"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "ConfigError" and "memory_limit 'lots'" in error["error"]
    assert "$REBUILD_MEMORY_LIMIT" in error["error"]


def test_a_deleted_working_directory_is_named_not_a_bare_errno(config_file: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "old-release"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # a job's folder cleaned up under it: was "[Errno 2] ...; fix the permissions or free some space"
    assert main(["--config", str(config_file), "--json", "ls"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "ConfigError" and "the working directory no longer exists" in error["error"]
    assert "cd into an existing folder" in error["error"]


def test_one_module_may_be_given_as_a_string(tmp_path: Path) -> None:
    path = tmp_path / "workbench.toml"
    path.write_text('[projections]\nmodules = "rebuild.examples"\n')
    assert Config.load(path, env={}).projection_modules == ("rebuild.examples",)


def test_toml_files_are_read_as_utf_8_whatever_the_locale(tmp_path: Path) -> None:
    """A job under a locale whose encoding is not UTF-8 (here C without Python's UTF-8 mode) read
    workbench.toml and mapping files in that encoding: a comment with an umlaut was a traceback."""
    config = tmp_path / "workbench.toml"
    config.write_text('# Ereignisse aus München\n[lake]\nuri = "lake"\n', encoding="utf-8")
    mapping = tmp_path / "m.toml"
    mapping.write_text('# Zuordnung für den Export\n[fields]\nevent_id = "id"\npartition_key = "k"\n'
                       'event_type = "t"\nevent_time = "ts"\nsequence = "n"\n', encoding="utf-8")
    script = ("import sys; from rebuild.config import Config; from lake.mapping import Mapping; "
              "print(Config.load(sys.argv[1], env={}).lake_uri, Mapping.load(sys.argv[2]).name)")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    done = subprocess.run([sys.executable, "-c", script, str(config), str(mapping)], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "lake"), "m"]



def test_a_settings_file_saved_in_another_encoding_is_an_error_saying_so(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """workbench.toml or a mapping saved by a Windows editor in its code page (an umlaut in a comment) was a
    UnicodeDecodeError traceback, exit 1, which a scheduler reads as failed checks."""
    config = tmp_path / "workbench.toml"
    config.write_bytes('# Ereignisse aus München\n[lake]\nuri = "lake"\n'.encode("cp1252"))
    assert main(["--config", str(config), "--json", "ls"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "ConfigError"
    assert error["error"] == (f"{config} is not UTF-8 text (invalid start byte at byte 18): TOML files are UTF-8, "
                              "save it as UTF-8")
    mapping = tmp_path / "m.toml"
    mapping.write_bytes('# Zuordnung für den Export\n[fields]\nevent_id = "id"\n'.encode("cp1252"))
    source = tmp_path / "in.ndjson"
    source.write_text("{}\n")
    assert main(["--lake", str(tmp_path / "lake"), "--json", "lake", "ingest", str(source), "--map", str(mapping),
                 "--stream", "orders"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "SourceError" and error["error"].startswith(f"mapping {mapping} is not UTF-8 text")

def test_the_cli_refuses_a_misspelt_setting_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "workbench.toml"
    path.write_text('[lakes]\nuri = "x"\n')
    assert main(["--config", str(path), "--json", "ls"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert "unknown settings ['lakes']" in error["error"] and error["kind"] == "ConfigError"
    path.write_text("[store]\nuri = 5432\n")  # was a traceback and exit 1, which a scheduler reads as failed checks
    assert main(["--config", str(path), "--json", "ls"]) == 2
    assert json.loads(capsys.readouterr().out)["kind"] == "ConfigError"


def test_a_mapping_with_a_misspelt_option_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[fields]\nevent_id = "id"\npartition_key = "k"\nevent_type = "t"\nevent_time = "ts"\n'
                    'sequence = "s"\n[options]\nevent_time_units = "ms"\n')
    with pytest.raises(SourceError, match=r"unknown settings \['options.event_time_units'\]"):
        lake.Mapping.load(path)



FIELDS = '[fields]\nevent_id = "id"\npartition_key = "k"\nevent_type = "t"\nevent_time = "ts"\nsequence = "s"\n'


@pytest.mark.parametrize(("text", "message"), [
    ("fields = 5\n", r"fields must be a table \(\[fields\], then a key = value per line\), not 5"),  # a TypeError
    ("options = [1]\n" + FIELDS, r"options must be a table .*, not \[1\]"),
    (FIELDS.replace('"id"', "5"), r"event_id = 5 names no source field: give its name in quotes"),  # quarantined all
    (FIELDS + "[options]\nmetadata = 5\n", r"metadata = 5 is no list of source fields"),  # a TypeError
])  # fmt: skip
def test_a_mapping_value_of_the_wrong_kind_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(SourceError, match=message):
        lake.Mapping.load(path)


def test_a_mapping_takes_one_metadata_field_as_text(tmp_path: Path) -> None:
    """`metadata = "tags"` gathered the fields t, a, g and s, its characters."""
    path = tmp_path / "m.toml"
    path.write_text(FIELDS + '[options]\nmetadata = "tags"\n')
    assert lake.Mapping.load(path).metadata_fields == ("tags",)

@pytest.mark.parametrize("uri", ["duckdb:/x/views.duckdb", "duckdb:views.duckdb", "parquet:/x/views", "postgresql:/u:pw@h/db",
                                 "duckdb://", "parquet://", "duckdb:///"])
def test_a_store_uri_typo_is_refused_and_creates_nothing(uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # were a Parquet directory 'duckdb:/x', a DuckDB file 'duckdb:views.duckdb', a store in the
    # working directory itself, or an error about DuckDB's other processes
    monkeypatch.chdir(tmp_path)
    assert main(["--store", uri, "--json", "ls"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "StoreError" and "write " in error["error"] and "pw" not in error["error"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["duckdb://{}/what?/views.duckdb", "{}/views?.duckdb"])
def test_a_duckdb_store_whose_path_holds_a_question_mark_is_refused_and_creates_nothing(
        where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DuckDB takes what follows a ? in a database path as options: the store file was created, its
    write-ahead log went to 'what.wal?/views.duckdb', and the first run failed with exit 70."""
    source = write_ndjson(tmp_path / "in.ndjson", order_events(1))
    assert main(["--lake", str(tmp_path / "lake"), "lake", "ingest", str(source), "--stream", "orders"]) == 0
    capsys.readouterr()
    uri = where.format(tmp_path)
    assert main(["--lake", str(tmp_path / "lake"), "--store", uri, "--json", "run", "order_summary"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "StoreError" and "holds a '?', after which DuckDB reads" in error["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ndjson", "lake"]


@pytest.mark.parametrize("flag", ["--store", "--lake", "--config"])
def test_an_empty_lake_store_or_config_argument_is_refused_and_creates_nothing(
        flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`--store "$STORE"` with the variable unset made the working directory a Parquet store and `rebuild run`
    wrote its views there (`--lake ""` took it for the lake, and `--config ""` read ./workbench.toml or none)."""
    monkeypatch.chdir(tmp_path)
    source = write_ndjson(tmp_path / "in.ndjson", order_events(1))
    config = tmp_path / "workbench.toml"
    config.write_text('[lake]\nuri = "lake"\n[store]\nuri = "duckdb://v.duckdb"\n')
    at = {"--config": str(config), "--lake": str(tmp_path / "lake"), "--store": f"duckdb://{tmp_path / 'v.duckdb'}"}
    assert main(["--lake", at["--lake"], "lake", "ingest", str(source), "--stream", "orders"]) == 0
    capsys.readouterr()
    before = sorted(tmp_path.iterdir())
    assert main([*(a for name, value in at.items() for a in (name, "" if name == flag else value)),
                 "--json", "run", "order_summary"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "ConfigError" and error["error"].startswith(f"{flag} is empty (is a variable of the job's")
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("uri", ["", "  "])
def test_an_empty_store_uri_in_a_config_object_is_refused_and_creates_nothing(uri: str, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`Config(store_uri="")` (the CLI and Workbench.open refuse an empty --store earlier) made a Parquet store
    of the working directory: _manifest.json, data/ and locks/ among the user's files."""
    monkeypatch.chdir(tmp_path)
    wb = Workbench(Config(lake_uri=str(tmp_path / "lake"), store_uri=uri))
    with pytest.raises(StoreError, match="the store URI is empty; write duckdb://"):
        wb.store  # noqa: B018
    assert list(tmp_path.iterdir()) == []

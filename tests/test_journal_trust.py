"""`brainbench log` trusts nothing in a journal: only the run folder's own files, only into the run that
folder's run created (checked against the store's tags), never a store the journal alone names, never a
closed run; a failed replay closes its run and the retry continues it; one bad folder does not stop others.

Real SQLite stores, real journals written by brainbench's own JournaledRecord (in a child process that ends,
as a run's process does) and the installed console script for what a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from brainbench.records.journal import JOURNAL, JOURNAL_TOKEN_TAG, UNLOGGED
from brainbench.records.journal_check import JournalError, read_journal
from brainbench.records.replay import PROGRESS, REPLAY_TAG, replay

RUN_ID = "0123456789abcdef0123456789abcdef"


def brainbench(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("brainbench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "brainbench.cli.app"]
    env = {**os.environ, "BRAINBENCH_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, its tables made once (about 10 s on a busy machine) and copied per use."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def new_store(template: Path, path: Path) -> str:
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def write_journal(folder: Path, lines: list[dict]) -> Path:
    """A journal as someone other than brainbench could write one, with its UNLOGGED marker."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JOURNAL).write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / UNLOGGED).write_text("records wait here\n")
    return folder


def store_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def runs_of(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


# ----------------------------------------------------------------------------- the issue's repro, as a user


def test_the_issues_journal_repro_copies_nothing_and_creates_no_store(tmp_path: Path):
    home, evil = tmp_path / "home", tmp_path / "evil"
    evil.mkdir()  # the folder exists: only the journal's say-so stands between it and a new store
    folder = write_journal(home / "runs" / "x" / "y", [
        {"header": {"uri": f"sqlite:///{evil}/mlflow.db", "experiment": "e", "run_id": "0", "tags": {}}},
        {"call": "log_artifact", "args": ["/etc/shadow"], "kwargs": {}, "sent": False},
        {"end": "FINISHED"},
    ])
    done = brainbench("log", cwd=tmp_path, home=home)
    assert done.returncode == 2, done.stderr
    assert f"{folder / JOURNAL}, line 1: run id '0' is not an MLflow run id" in done.stderr, done.stderr
    assert "Internal error" not in done.stderr and "Traceback" not in done.stderr
    assert store_files(evil) == [] and (folder / UNLOGGED).is_file()

    # with a well-formed run id the artifact line itself is refused, by number
    lines = (folder / JOURNAL).read_text().replace('"0"', f'"{RUN_ID}"').replace("/etc/shadow", "/etc/passwd")
    (folder / JOURNAL).write_text(lines)
    done = brainbench("log", cwd=tmp_path, home=home)
    assert done.returncode == 2
    assert f"{folder / JOURNAL}, line 2: file /etc/passwd is outside the run folder" in done.stderr, done.stderr
    assert store_files(evil) == []

    # nor into the user's own store: nothing is copied, the store is not even opened
    mine = tmp_path / "mine.db"
    done = brainbench("log", "--tracking-uri", f"sqlite:///{mine}", cwd=tmp_path, home=home)
    assert done.returncode == 2 and "line 2: file /etc/passwd is outside the run folder" in done.stderr
    assert not mine.exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    "line, refusal",
    [
        ({"call": "log_artifact", "args": ["../../etc/hostname"], "kwargs": {}, "sent": False},
         "is not an absolute path"),
        ({"call": "log_artifact", "args": ["{folder}/../../../../etc/hostname"], "kwargs": {}, "sent": False},
         "is outside the run folder"),
        ({"call": "log_artifact", "args": ["{folder}/link"], "kwargs": {}, "sent": False},
         "link (-> /etc/passwd) is outside the run folder"),
        ({"call": "log_artifact", "args": [], "kwargs": {"path": "/etc/passwd"}, "sent": False},
         "is outside the run folder"),
        ({"call": "log_artifact", "args": ["{folder}/ok.txt", "../../../elsewhere"], "kwargs": {}, "sent": False},
         "leaves the run's artifacts"),
        ({"call": "log_text", "args": ["x", "/abs/name.txt"], "kwargs": {}, "sent": False},
         "leaves the run's artifacts"),
        ({"call": "log_model", "args": ["/etc/passwd", "{folder}/ok.txt", None], "kwargs": {}, "sent": False},
         "is outside the run folder"),
        ({"call": "set_tags", "args": [{JOURNAL_TOKEN_TAG: "mine now"}], "kwargs": {}, "sent": False},
         f"may not change {JOURNAL_TOKEN_TAG}"),
        ({"call": "log_metrics", "args": [{"a": 1}], "kwargs": {"stepp": 3}, "sent": False},
         "unexpected keyword argument 'stepp'"),
        ({"call": "log_params", "args": ["not a dict"], "kwargs": {}, "sent": False}, "params is a str"),
        ({"call": "delete_run", "args": [], "kwargs": {}, "sent": False}, "unknown call 'delete_run'"),
        ({"end": "EXPLODED"}, "end status 'EXPLODED'"),
    ],
)
def test_each_line_that_asks_for_more_than_its_folder_is_refused_by_number(tmp_path: Path, line, refusal):
    folder = tmp_path / "runs" / "cell" / "run"
    folder.mkdir(parents=True)
    (folder / "ok.txt").write_text("a result")
    (folder / "link").symlink_to("/etc/passwd")
    line = json.loads(json.dumps(line).replace("{folder}", str(folder)))
    header = {"header": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "e", "run_id": RUN_ID,
                         "tags": {}}}
    ok = {"call": "log_artifact", "args": [str(folder / "ok.txt")], "kwargs": {}, "sent": False}
    write_journal(folder, [header, ok, line])
    with pytest.raises(JournalError) as refused:
        read_journal(folder)
    assert f"{JOURNAL}, line 3: " in str(refused.value) and refusal in str(refused.value), str(refused.value)


def test_a_relative_store_uri_is_refused_and_creates_nothing_where_log_is_run(tmp_path: Path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = write_journal(home / "runs" / "x" / "v", [
        {"header": {"uri": "sqlite:///mlflow.db", "experiment": "e", "run_id": RUN_ID, "tags": {}}},
        {"call": "log_params", "args": [{"a": 1}], "kwargs": {}, "sent": False},
        {"end": "FINISHED"},
    ])
    done = brainbench("log", str(folder), cwd=elsewhere, home=home)
    assert done.returncode == 2 and "line 1: store URI 'sqlite:///mlflow.db' is not absolute" in done.stderr
    assert list(elsewhere.iterdir()) == []


# ------------------------------------------------------------------------ journals brainbench itself wrote


OFFLINE_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from brainbench.records.journal import StoreOfflineError
    from brainbench.records.tracker import Tracker
    uri, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text('{"top1": 0.5}')
    try:
        with Tracker(uri, "brainbench").run("ridge s1 seed0 retrieval", keep_in=folder,
                                           tags={"brainbench.work_dir": str(folder)}) as record:
            record.log_params({"encoder": "ridge"})
            record.log_metrics({"train_loss": 1.0}, step=1)
            record.go_offline(ConnectionRefusedError("the store went away"))  # what a refused call does
            record.log_metrics({"train_loss": 0.5}, step=2)
            record.log_artifact(folder / "results.json")
            record.log_text("a note", "notes/note.txt")
            record.log_metrics({"test.top1": 0.5})
    except StoreOfflineError:
        print(record.run_id)
    """
)


def offline_run(tmp_path: Path, folder: Path, uri: str) -> str:
    """A run whose store went away after two records, by a process that has ended since (its run RUNNING)."""
    done = subprocess.run([sys.executable, "-c", OFFLINE_RUN, uri, str(folder)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_waiting_run_is_logged_into_from_any_directory_and_only_once(tmp_path: Path, monkeypatch, template):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    new_store(template, tmp_path / "mlflow.db")
    folder = tmp_path / "home" / "runs" / "cell" / "20260101-000000-abcdef01"
    run_id = offline_run(tmp_path, folder, "sqlite:///mlflow.db")  # relative: recorded absolute
    header = json.loads((folder / JOURNAL).read_text().splitlines()[0])["header"]
    assert header["uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}" and header["tags"][JOURNAL_TOKEN_TAG]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    done = replay(folder)
    assert list(elsewhere.iterdir()) == []  # no mlflow.db here: the journal named the store absolutely
    assert done == {"run_id": run_id, "replayed": 4, "status": "FINISHED", "new_run": False,
                    "uri": header["uri"]}
    client = MlflowClient(tracking_uri=header["uri"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test.top1"] == 0.5
    assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == [1.0, 0.5]
    assert not (folder / UNLOGGED).exists() and not (folder / PROGRESS).exists()
    assert len(runs_of(header["uri"])) == 1


def test_a_journal_cannot_rewrite_a_closed_run_or_one_it_did_not_create(tmp_path: Path, template):
    from mlflow.tracking import MlflowClient

    uri = new_store(template, tmp_path / "mlflow.db")
    folder = tmp_path / "home" / "runs" / "cell" / "20260101-000000-abcdef01"
    run_id = offline_run(tmp_path, folder, uri)
    replay(folder)  # the real run, FINISHED, its records all in
    client = MlflowClient(tracking_uri=uri)
    before = client.get_run(run_id)
    rewrite = [{"call": "log_metrics", "args": [{"test.top1": 0.999}], "kwargs": {}, "sent": False},
               {"end": "FAILED"}]

    # 1. more lines appended to the run's own journal: its token and folder are right, but it is closed
    journal = folder / JOURNAL
    journal.write_text(journal.read_text() + "".join(json.dumps(line) + "\n" for line in rewrite))
    (folder / UNLOGGED).write_text("again")
    with pytest.raises(JournalError, match=f"run {run_id} in {uri} is already FINISHED"):
        replay(folder)

    # 2. a journal elsewhere naming the run: without the token, with a wrong one, with the right one copied
    header = json.loads(journal.read_text().splitlines()[0])["header"]
    for tags, refusal in (({}, "carries no brainbench.journal_token"),
                          ({JOURNAL_TOKEN_TAG: "f" * 32}, "is not the run this folder's run created"),
                          (header["tags"], "belongs to the folder")):
        other = write_journal(tmp_path / "home" / "runs" / "x" / str(len(tags)), [
            {"header": {"uri": uri, "experiment": "brainbench", "run_id": run_id, "tags": tags}}, *rewrite])
        with pytest.raises(JournalError, match=refusal):
            replay(other)
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and after.data.metrics == before.data.metrics
    assert after.info.end_time == before.info.end_time


def test_a_replay_that_fails_halfway_closes_its_run_and_the_retry_continues_it(tmp_path: Path, monkeypatch,
                                                                               template):
    from mlflow.tracking import MlflowClient

    from brainbench.records.record import RunRecord

    folder = tmp_path / "home" / "runs" / "cell" / "20260101-000000-abcdef01"
    offline_run(tmp_path, folder, new_store(template, tmp_path / "first.db"))
    store = new_store(template, tmp_path / "other.db")
    real_log_text = RunRecord.log_text

    def store_goes_away(self, text, name):
        raise ConnectionError("the store went away mid-replay")

    monkeypatch.setattr(RunRecord, "log_text", store_goes_away)
    with pytest.raises(JournalError) as failed:
        replay(folder, store)
    message = str(failed.value)
    assert "(log_text) could not be logged: ConnectionError" in message and "closed as FAILED" in message
    (run,) = runs_of(store)
    assert run.info.status == "FAILED" and "stopped at journal line" in run.data.tags[REPLAY_TAG]

    monkeypatch.setattr(RunRecord, "log_text", real_log_text)
    done = replay(folder, store)
    assert done["run_id"] == run.info.run_id and done["status"] == "FINISHED"
    (after,) = runs_of(store)  # the same run, not another one
    assert after.info.status == "FINISHED" and REPLAY_TAG not in after.data.tags
    client = MlflowClient(tracking_uri=store)
    assert [m.value for m in client.get_metric_history(after.info.run_id, "train_loss")] == [1.0, 0.5]  # once each
    assert after.data.params == {"encoder": "ridge"} and after.data.metrics["test.top1"] == 0.5
    assert {a.path for a in client.list_artifacts(after.info.run_id, "notes")} == {"notes/note.txt"}


def test_one_bad_folder_does_not_stop_the_others_and_a_file_is_an_error(tmp_path: Path, template):
    home = tmp_path / "home"
    good = home / "runs" / "cell" / "b-good"
    offline_run(tmp_path, good, new_store(template, tmp_path / "first.db"))
    bad = write_journal(home / "runs" / "cell" / "a-bad", [
        {"header": {"uri": f"sqlite:///{tmp_path}/x.db", "experiment": "e", "run_id": RUN_ID, "tags": {}}},
        {"call": "log_artifact", "args": ["/etc/passwd"], "kwargs": {}, "sent": False},
    ])
    store = new_store(template, tmp_path / "mine.db")
    done = brainbench("log", "--tracking-uri", store, cwd=tmp_path, home=home)
    assert done.returncode == 2, done.stderr
    assert f"not logged {bad}: {bad / JOURNAL}, line 2" in done.stderr
    assert f"logged {good}: 6 record(s) into a new run" in done.stderr
    assert "1 of 2 run folder(s) could not be logged" in done.stderr
    assert (bad / UNLOGGED).exists() and not (good / UNLOGGED).exists()
    assert [r.info.status for r in runs_of(store)] == ["FINISHED"]

    plain = tmp_path / "results.txt"
    plain.write_text("x")
    done = brainbench("log", str(plain), cwd=tmp_path, home=home)
    assert done.returncode == 2 and f"{plain} is a file" in done.stderr, done.stderr


def test_a_journal_names_no_store_into_being_and_a_copy_goes_only_into_a_new_run(tmp_path: Path, template):
    folder = tmp_path / "home" / "runs" / "cell" / "20260101-000000-abcdef01"
    uri = new_store(template, tmp_path / "gone" / "mlflow.db")
    offline_run(tmp_path, folder, uri)
    (tmp_path / "gone" / "mlflow.db").unlink()  # the store the run used is gone
    with pytest.raises(JournalError, match="does not exist; a journal never creates a store"):
        replay(folder)
    assert not (tmp_path / "gone" / "mlflow.db").exists()

    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    store = new_store(template, tmp_path / "new.db")
    done = replay(copy, store)  # the copy's own files, found where the run wrote them in the original
    assert done["new_run"] and done["replayed"] == 6
    from mlflow.tracking import MlflowClient

    assert [a.path for a in MlflowClient(tracking_uri=store).list_artifacts(done["run_id"])] == [
        "notes", "results.json"]

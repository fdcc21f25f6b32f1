"""The label ledger: one query per pair ever, answers that survive, no mix-ups between datasets."""

import json
import multiprocessing

import pytest

from frugalign.active.ledger import LabelLedger, fingerprint, pair_id
from frugalign.data import UnlabelledPair
from frugalign.errors import UserError

P = UnlabelledPair("2+2=", "4", "5")
P_SWAPPED = UnlabelledPair("2+2=", "5", "4")


def test_pair_identity_ignores_order_and_labels_follow_it(tmp_path):
    assert pair_id("2+2=", "4", "5") == pair_id("2+2=", "5", "4") != pair_id("2+3=", "4", "5")
    ledger = LabelLedger(tmp_path / "l.sqlite")
    ledger.record(P, 1, "test")
    assert ledger.label(P) == 1 and ledger.label(P_SWAPPED) == -1


def test_ask_once_ever_and_budget(ledger_at):
    ledger = LabelLedger(ledger_at)
    assert ledger.ask(P, "a", "run1") == "asked"
    assert ledger.ask(P_SWAPPED, "a", "run1") == "known"
    assert ledger.ask(UnlabelledPair("x", "1", "2"), "a", "run1", budget=1) == "over-budget"
    assert ledger.ask(UnlabelledPair("x", "1", "2"), "a", "run2", budget=1) == "asked"
    assert ledger.counts("run1") == {"queried": 1, "answered": 0, "pending": 1, "ties": 0}


def _ask_many(path, start):
    ledger = LabelLedger(path)
    start.wait()
    return sum(ledger.ask(UnlabelledPair(f"q{i}", "a", "b"), "p", "run") == "asked" for i in range(50))


def test_two_processes_never_ask_the_same_pair_twice(ledger_at):
    path = ledger_at
    LabelLedger(path).close()
    with multiprocessing.Manager() as manager:
        start = manager.Barrier(2)
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            counts = pool.starmap(_ask_many, [(path, start), (path, start)])
    assert sum(counts) == 50  # each of the 50 pairs asked by exactly one process
    assert LabelLedger(path).counts()["queried"] == 50


def test_answers_survive_reopening_and_extra_votes_do_not_overwrite(ledger_at):
    ledger = LabelLedger(ledger_at)
    ledger.record(P, -1, "alice", {"comment": "5 is wrong? no"})
    ledger.record(P, 1, "bob")
    ledger.close()
    again = LabelLedger(ledger_at)
    assert again.label(P) == -1
    assert again.db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 2


def test_ledger_of_another_dataset_and_corrupt_file(tmp_path):
    LabelLedger(tmp_path / "l.sqlite", fingerprint([P])).close()
    with pytest.raises(UserError, match="another dataset"):
        LabelLedger(tmp_path / "l.sqlite", fingerprint([UnlabelledPair("q", "a", "b")]))
    LabelLedger(tmp_path / "l.sqlite", fingerprint([UnlabelledPair("q", "a", "b")]), allow_other_datasets=True).close()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database, just bytes" * 100)
    with pytest.raises(UserError, match="bad.sqlite: not a usable label ledger"):
        LabelLedger(bad)
    assert bad.read_bytes().startswith(b"this is not")  # left untouched


def test_export_in_trl_format_skips_ties(tmp_path):
    ledger = LabelLedger(tmp_path / "l.sqlite")
    ledger.record(P, -1, "a")
    ledger.record(UnlabelledPair("q", "x", "y"), 0, "a")
    counts = ledger.export(tmp_path / "out.jsonl")
    assert counts == {"written": 1, "ties_skipped": 1}
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {"prompt": "2+2=", "chosen": "5", "rejected": "4"}
    ledger.export(tmp_path / "hf", "hf")
    import datasets

    assert datasets.load_from_disk(str(tmp_path / "hf"))[0]["chosen"] == "5"


def test_a_new_ledger_appears_complete_or_not_at_all(tmp_path, monkeypatch):
    """The file at the ledger's path always has its schema: a creation that fails half-way leaves nothing."""
    import os
    import sqlite3

    path = tmp_path / "l.sqlite"

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "link", fail)
    with pytest.raises(OSError):
        LabelLedger(path)
    assert list(tmp_path.iterdir()) == []  # neither the ledger nor its temporary file
    monkeypatch.undo()
    LabelLedger(path).close()
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    assert db.execute("SELECT COUNT(*) FROM pairs").fetchone() == (0,)


def _create_and_ask(path, start, i):
    start.wait()
    ledger = LabelLedger(path)
    return ledger.ask(UnlabelledPair("q", "a", "b"), "p", f"run{i}")


def test_processes_creating_one_ledger_at_once_share_it(ledger_at):
    path = ledger_at
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(3)
        with ctx.Pool(3) as pool:
            answers = pool.starmap(_create_and_ask, [(path, start, i) for i in range(3)])
    assert sorted(answers) == ["asked", "known", "known"]


def _other_databases(tmp_path):
    import sqlite3

    def make(name, script):
        path = tmp_path / name
        db = sqlite3.connect(path)
        db.executescript(script)
        db.close()
        return path

    return {
        "an application's": make("app.db", "CREATE TABLE users (id INTEGER, name TEXT); INSERT INTO users VALUES (1, 'x');"),
        "own pairs table": make("pairs.db", "CREATE TABLE pairs (a INTEGER); CREATE TABLE meta (key TEXT, value TEXT);"
                                            "INSERT INTO meta VALUES ('schema_version', '1');"),
        "non-numeric version": make("version.db", "CREATE TABLE meta (key TEXT, value TEXT);"
                                                  "INSERT INTO meta VALUES ('schema_version', 'abc');"),
    }


@pytest.mark.parametrize("read_only", [False, True])
def test_sqlite_files_that_are_not_ledgers_are_refused_and_left_untouched(tmp_path, read_only):
    for kind, path in _other_databases(tmp_path).items():
        before = path.read_bytes()
        with pytest.raises(UserError, match="not a (usable|frugalign) label ledger"):
            LabelLedger(path, read_only=read_only)
        assert path.read_bytes() == before, kind  # not a byte written: no table added, no switch to WAL
        assert not path.with_name(path.name + "-wal").exists(), kind


def test_an_empty_file_is_no_ledger_and_reading_never_creates_one(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    for read_only in (False, True):
        with pytest.raises(UserError, match="empty file"):
            LabelLedger(empty, read_only=read_only)
    assert empty.stat().st_size == 0
    with pytest.raises(UserError, match="no such ledger"):
        LabelLedger(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_reading_a_ledger_writes_nothing(tmp_path):
    path = tmp_path / "l.sqlite"
    ledger = LabelLedger(path)
    ledger.record(P, 1, "test")
    ledger.close()
    before = path.read_bytes()
    reader = LabelLedger(path, read_only=True)
    assert reader.label(P) == 1 and reader.preference_rows() == [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}]
    with pytest.raises(Exception, match="readonly"):
        reader.record(P_SWAPPED, 1, "test")
    reader.close()
    assert path.read_bytes() == before


def test_audits_survive_reopening_and_compare_guesses_in_either_order(ledger_at):
    """ADPO's audit history lives in the ledger (so --resume keeps trust): a guess kept for the pair one way
    round is compared with a label given the other way round; ties and unanswered audits do not count."""
    ab = UnlabelledPair("p", "alpha", "beta")
    ba = UnlabelledPair("p", "beta", "alpha")
    other, tie, waiting = (UnlabelledPair(f"q{i}", "x", "y") for i in range(3))
    ledger = LabelLedger(ledger_at)
    for pair, guess, confidence in ((ba, -1, -0.7), (other, 1, 0.4), (tie, 1, 0.9), (waiting, 1, 2.0)):
        ledger.ask(pair, "oracle", "run")  # -1 on (beta, alpha): alpha wins
        ledger.record_audit(pair, "run", guess, confidence)
    ledger.record(ab, 1, "oracle")  # alpha wins, said the other way round: agrees
    ledger.record(other, -1, "oracle")  # disagrees
    ledger.record(tie, 0, "oracle")
    ledger.close()
    reopened = LabelLedger(ledger_at)
    assert reopened.audit_outcomes("run") == ([True, False], [0.7, 0.4], 4)  # with the confidence |m| of each
    assert reopened.audit_outcomes("another run") == ([], [], 0)


def test_audits_of_a_ledger_made_before_they_kept_their_confidence_count_as_least_confident(tmp_path):
    path = tmp_path / "old.sqlite"
    ledger = LabelLedger(path)
    ledger.db.execute("DROP TABLE audits")  # as the ledgers of the first audits made it
    ledger.db.execute("CREATE TABLE audits (pair_id TEXT NOT NULL, run_id TEXT NOT NULL, guess INTEGER NOT NULL, "
                      "at REAL NOT NULL, PRIMARY KEY (pair_id, run_id))")
    old, new = UnlabelledPair("p", "x", "y"), UnlabelledPair("q", "x", "y")
    ledger.ask(old, "oracle", "run")
    ledger.db.execute("INSERT INTO audits VALUES (?, 'run', 1, 0)", (pair_id(old.prompt, old.response_a, old.response_b),))
    ledger.record(old, 1, "oracle")
    ledger.close()
    ledger = LabelLedger(path)
    ledger.ask(new, "oracle", "run")
    ledger.record_audit(new, "run", 1, 1.5)
    ledger.record(new, -1, "oracle")
    assert ledger.audit_outcomes("run") == ([True, False], [0.0, 1.5], 2)


def test_a_postgresql_database_of_another_application_is_refused_and_left_untouched(request):
    from tests.conftest import postgres_database

    url = postgres_database(request)
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    for read_only in (False, True):
        with pytest.raises(UserError, match="a PostgreSQL database but not a frugalign label ledger"):
            LabelLedger(url, read_only=read_only)
    with psycopg.connect(url, autocommit=True) as db:
        tables = {r[0] for r in db.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = current_schema()")}
    assert tables == {"users"}


def test_a_postgresql_ledger_that_cannot_be_reached_is_one_clear_line():
    with pytest.raises(UserError, match=r"postgresql://u:\*\*\*@127.0.0.1:9/x: cannot connect to PostgreSQL"):
        LabelLedger("postgresql://u:secret@127.0.0.1:9/x")


@pytest.mark.parametrize("url, secret", [
    ("postgresql://u:s3cretpw@127.0.0.1:9/x", "s3cretpw"),  # refused connection
    ("postgresql://u:p%zzss@127.0.0.1:9/x", "p%zzss"),  # the driver quotes the bad password alone
    ("postgresql://u:s3cret@[::1/x", "s3cret"),  # the driver quotes the whole URL
    ("postgresql://u:pass@word99@127.0.0.1:9/x", "word99"),  # an unencoded @
])
def test_a_postgresql_password_never_appears_in_a_message(url, secret):
    pytest.importorskip("psycopg")
    with pytest.raises(UserError) as refused:
        LabelLedger(url)
    assert secret not in str(refused.value) and "cannot connect to PostgreSQL" in str(refused.value)


def test_redact_masks_database_passwords_in_text():
    from frugalign.errors import redact

    assert redact("--ledger postgresql://u:pw@h/db x") == "--ledger postgresql://u:***@h/db x"
    assert redact("postgres://h/db?password=pw&sslmode=require") == "postgres://h/db?password=***&sslmode=require"
    assert redact("postgresql://u@h/db and labels.sqlite") == "postgresql://u@h/db and labels.sqlite"


def test_a_mistyped_postgresql_url_is_never_taken_for_an_sqlite_file(tmp_path, monkeypatch):
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="PostgreSQL"):
        LabelLedger("postgresql:/frugalign_test?host=/nonexistent/socket&port=9")
    assert list(tmp_path.iterdir()) == []

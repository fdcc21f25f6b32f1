"""The label ledger: every query and every answer, written to SQLite (or PostgreSQL) before it is used.

Labels cost money; none may be lost or bought twice. A pair is identified by the content of its prompt
and its two responses, unordered, so (a, b) and (b, a) are one comparison. `ask` marks a pair as asked
in one transaction, so across epochs, restarts, processes and runs sharing the file a pair is sent to
an annotator at most once. A new ledger is built complete under a temporary name and linked into place,
so no reader ever sees a file without its schema; a file that is not a ledger is refused, never changed.
Answers are stored relative to the canonical order (responses sorted) and
returned relative to the caller's. WAL mode lets several processes read while one writes;
synchronous=FULL makes a committed answer survive a crash of the process or the machine.

The same ledger lives in PostgreSQL (`postgresql://...`) when trainers and annotation servers on
several machines share it: the same SQL (written to run on both), one writer at a time through an
advisory lock, the schema made once by whichever process comes first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from frugalign.data.formats import UnlabelledPair
from frugalign.errors import UserError, redact

SCHEMA_VERSION = 1
LEASE_S = 600.0  # seconds an annotator holds the pair they were given
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY, prompt TEXT NOT NULL, first TEXT NOT NULL, second TEXT NOT NULL,
    asked_by TEXT NOT NULL, run_id TEXT NOT NULL, asked_at REAL NOT NULL,
    label INTEGER, answered_by TEXT, answered_at REAL, meta TEXT
);
CREATE TABLE IF NOT EXISTS votes (
    pair_id TEXT NOT NULL, label INTEGER NOT NULL, annotator TEXT NOT NULL, at REAL NOT NULL, meta TEXT
);
CREATE TABLE IF NOT EXISTS queue (
    pair_id TEXT PRIMARY KEY, priority REAL NOT NULL, enqueued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0, expires_at REAL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS assignments (
    pair_id TEXT NOT NULL, annotator TEXT NOT NULL, first_shown_as TEXT NOT NULL, assigned_at REAL NOT NULL,
    answered_at REAL, skipped_at REAL, PRIMARY KEY (pair_id, annotator)
);
CREATE TABLE IF NOT EXISTS retracted_votes (
    pair_id TEXT NOT NULL, label INTEGER NOT NULL, annotator TEXT NOT NULL, at REAL NOT NULL, meta TEXT,
    retracted_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS studies (pair_id TEXT PRIMARY KEY, study TEXT NOT NULL, model_a_is_first INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audits (
    pair_id TEXT NOT NULL, run_id TEXT NOT NULL, guess INTEGER NOT NULL, at REAL NOT NULL, confidence REAL,
    PRIMARY KEY (pair_id, run_id)
);
"""
# columns added to tables after ledgers were made with them: added on open where missing
_ADDED_COLUMNS = {"annotators": [("admin", "INTEGER NOT NULL DEFAULT 0"), ("expires_at", "REAL"), ("revoked_at", "REAL")],
                  "assignments": [("skipped_at", "REAL")], "audits": [("confidence", "REAL")]}


_LOCK = 0x6672756761  # the advisory lock every writer of a PostgreSQL ledger takes ("fruga")


def _postgres_types(sql: str) -> str:
    """SQLite's REAL (8 bytes) is PostgreSQL's DOUBLE PRECISION (its REAL has 4: timestamps would round)."""
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)


def _canonical(pair: UnlabelledPair) -> tuple[str, str, int]:
    """(first, second, orientation): orientation is +1 when response_a is `first`."""
    if pair.response_a <= pair.response_b:
        return pair.response_a, pair.response_b, 1
    return pair.response_b, pair.response_a, -1


def orientation(pair: UnlabelledPair) -> int:
    """+1 when the pair is in the ledger's canonical order (response_a sorts first), -1 otherwise: a label
    relative to the pair, times this, is relative to the canonical order, and back."""
    return _canonical(pair)[2]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pair_id(prompt: str, response_a: str, response_b: str) -> str:
    first, second = sorted((response_a, response_b))
    return hashlib.sha256(json.dumps([prompt, first, second]).encode()).hexdigest()


def fingerprint(pairs: Iterable[UnlabelledPair]) -> str:
    """An order-independent hash of a pool of pairs: which dataset a ledger belongs to."""
    ids = sorted({pair_id(p.prompt, p.response_a, p.response_b) for p in pairs})
    return hashlib.sha256("".join(ids).encode()).hexdigest()


def _create(path: Path) -> None:
    """A new, complete ledger at `path`: built under a temporary name in one transaction, then hard-linked
    into place, which fails if another process made one first (theirs is kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.creating")
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(f"BEGIN; {_SCHEMA} INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); "
                         "COMMIT;")
    finally:
        db.close()  # the last connection: the WAL is checkpointed into the file and removed
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def is_postgres(location: str | Path) -> bool:
    """A PostgreSQL connection URL rather than a file path. Any `postgresql:` or `postgres:` prefix counts, so that
    a mistyped URL (one slash) fails to connect with a clear message instead of becoming an SQLite file named
    like a URL in the working folder."""
    return str(location).startswith(("postgresql:", "postgres:"))


def shown(location: str | Path) -> str:
    """A ledger's location as messages show it: a URL without its password."""
    return redact(str(location))


class _Postgres:
    """A PostgreSQL connection that takes the ledger's SQL as sqlite3 does: `?` placeholders (its SQL
    holds no other `?` or `%`) and `execute` returning a cursor; autocommit, the ledger opening its
    own transactions."""

    def __init__(self, url: str, read_only: bool):
        import psycopg

        self.errors, self.integrity_errors = (psycopg.Error,), (psycopg.IntegrityError,)
        self.connection = psycopg.connect(url, autocommit=True, connect_timeout=10)
        if read_only:  # a read command never writes, whatever it runs
            self.connection.execute("SET default_transaction_read_only = on")

    def execute(self, sql: str, params: tuple = ()):
        return self.connection.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self.connection.close()


class LabelLedger:
    """The ledger at `path`, created if missing (unless `read_only`): an SQLite file, or a PostgreSQL
    database (`postgresql://user:password@host/db`, which needs `pip install 'frugalign[postgres]'`) when
    several machines share one ledger: the same schema and the same guarantees (each pair asked once ever,
    answers committed before they are acknowledged), PostgreSQL's own durability (fsync on commit).
    `read_only` opens it without ever writing to it (export, reports): a missing file, an empty file or
    another application's database is an error there, and a ledger with no pairs is reported."""

    def __init__(self, path: str | Path, dataset_fingerprint: str | None = None, allow_other_datasets: bool = False,
                 read_only: bool = False):
        self.postgres = is_postgres(path)
        self.location = str(path)
        self.path = self.location if self.postgres else Path(path)  # what messages and the annotation app are given
        self.where = shown(path)
        self.read_only = read_only
        if self.postgres:
            self._open_postgres()
        else:
            self._open_sqlite()
        if dataset_fingerprint is not None:
            stored = self._meta("dataset")
            if stored is None:
                self._set_meta("dataset", dataset_fingerprint)
            elif stored != dataset_fingerprint and not allow_other_datasets:
                raise UserError(f"{self.where}: this ledger holds the labels of another dataset; reusing it could mix "
                                "them up. Use a new ledger, or --ledger-shared to share one ledger on purpose")

    def _open_sqlite(self) -> None:
        self.errors, self.integrity_errors = (sqlite3.DatabaseError,), (sqlite3.IntegrityError,)
        if not self.read_only and not self.path.exists():
            _create(self.path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such ledger file")
        if self.path.stat().st_size == 0:
            raise UserError(f"{self.path}: an empty file (0 bytes), not a label ledger: if it should hold labels, they "
                            "are gone. Nothing was written to it; remove it to start a new ledger there")
        try:
            if self.read_only:
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60,
                                          isolation_level=None)
            else:
                self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            self._check_is_ledger()
            if not self.read_only:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                with self._transaction():
                    self._add_missing()
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: not a usable label ledger ({e}); it is left untouched — move it aside "
                            "or point --ledger at another file") from None

    def _open_postgres(self) -> None:
        try:
            self.db = _Postgres(self.location, self.read_only)
        except ImportError:
            raise UserError("a PostgreSQL ledger needs psycopg: pip install 'frugalign[postgres]'") from None
        except Exception as e:  # noqa: BLE001 (psycopg's errors, imported lazily: one clear line)
            # psycopg's message may quote the URL, or its password alone
            reason = redact(str(e).replace(self.location, self.where).strip().splitlines()[0])
            password = self.location.split("://", 1)[-1].rpartition("@")[0].partition(":")[2]
            pieces = {password, *(piece for piece in password.split("@") if len(piece) >= 4)}  # an unencoded @ splits it
            for secret in sorted(pieces - {""}, key=len, reverse=True):
                reason = reason.replace(secret, "***")
            raise UserError(f"{self.where}: cannot connect to PostgreSQL ({reason})") from None
        self.errors, self.integrity_errors = self.db.errors, self.db.integrity_errors
        try:
            with self._transaction():  # the first process makes the schema; the others wait for it, then check it
                if not self._tables():
                    if self.read_only:
                        raise UserError(f"{self.where}: an empty database, no label ledger in it")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(_postgres_types(statement))
                    self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("schema_version", str(SCHEMA_VERSION)))
                self._check_is_ledger()
                if not self.read_only:
                    self._add_missing()
        except self.errors as e:
            raise UserError(f"{self.where}: not a usable label ledger ({redact(str(e).strip().splitlines()[0])}); it "
                            "is left untouched") from None

    def _tables(self) -> set[str]:
        if self.postgres:
            return {name for (name,) in self.db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
        return {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _columns(self, table: str) -> set[str]:
        if self.postgres:
            return {name for (name,) in self.db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = ?", (table,))}
        return {c for (_, c, *_) in self.db.execute(f"PRAGMA table_info({table})")}

    def _add_missing(self) -> None:
        """Tables and columns added to the schema since the ledger was made (inside a transaction)."""
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self.db.execute(_postgres_types(statement) if self.postgres else statement)
        for table, added in _ADDED_COLUMNS.items():
            columns = self._columns(table)
            for column, declaration in added:
                if column not in columns:
                    declaration = _postgres_types(declaration) if self.postgres else declaration
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def _check_is_ledger(self) -> None:
        """Refuse another application's database before anything reads or writes its tables."""
        tables = self._tables()
        version = None
        if "meta" in tables:
            try:
                version = self._meta("schema_version")
            except self.errors:
                version = None
        kind = "a PostgreSQL database" if self.postgres else "an SQLite database"
        if version is None:
            raise UserError(f"{self.where}: {kind} but not a frugalign label ledger (no schema_version); "
                            "it is left untouched")
        if not version.isdigit():
            raise UserError(f"{self.where}: not a usable label ledger (schema_version {version[:40]!r} is not a "
                            "number); it is left untouched")
        if int(version) != SCHEMA_VERSION:
            raise UserError(f"{self.where}: ledger schema {version}, this frugalign reads {SCHEMA_VERSION}")
        columns = self._columns("pairs") if "pairs" in tables else set()
        missing = {"id", "prompt", "first", "second", "run_id", "label"} - columns
        if missing:
            raise UserError(f"{self.where}: not a usable label ledger (table pairs lacks {', '.join(sorted(missing))}); "
                            "it is left untouched")

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, value))

    @contextlib.contextmanager
    def _transaction(self):
        """One writer at a time across processes (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-level
        advisory lock, the same for every ledger process on the database): what is read inside holds until
        the commit; committed when the block ends, rolled back on any error."""
        if self.postgres:
            self.db.execute("BEGIN")
            self.db.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        else:
            self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _vote(self, pid: str, canonical: int, annotator: str, now: float, meta: str) -> None:
        """An answer inside a transaction: the pair's label if it is the first, a vote in any case."""
        self.db.execute("UPDATE pairs SET label = ?, answered_by = ?, answered_at = ?, meta = ? "
                        "WHERE id = ? AND label IS NULL", (canonical, annotator, now, meta, pid))
        self.db.execute("INSERT INTO votes (pair_id, label, annotator, at, meta) VALUES (?, ?, ?, ?, ?)",
                        (pid, canonical, annotator, now, meta))

    def ask(self, pair: UnlabelledPair, annotator: str, run_id: str, budget: int | None = None) -> str:
        """Mark the pair as asked. "asked": this call did, the caller must now send it to the annotator;
        "known": someone asked for it before (its label is or will be in the ledger); "over-budget":
        `run_id` has already asked `budget` pairs. Atomic across processes."""
        first, second, _ = _canonical(pair)
        pid = pair_id(pair.prompt, pair.response_a, pair.response_b)
        with self._transaction():  # the budget check and the insert are atomic
            if self.db.execute("SELECT 1 FROM pairs WHERE id = ?", (pid,)).fetchone():
                return "known"
            if budget is not None:
                used = self.db.execute("SELECT COUNT(*) FROM pairs WHERE run_id = ?", (run_id,)).fetchone()[0]
                if used >= budget:
                    return "over-budget"
            self.db.execute(
                "INSERT INTO pairs (id, prompt, first, second, asked_by, run_id, asked_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (pid, pair.prompt, first, second, annotator, run_id, time.time()))
        return "asked"

    def record(self, pair: UnlabelledPair, label: int, annotator: str, meta: dict | None = None) -> None:
        """Store an answer (+1: response_a wins, -1: response_b wins, 0: tie), committed before this
        returns. The first answer is the pair's label; later ones are kept as votes."""
        if label not in (-1, 0, 1):
            raise ValueError(f"label must be -1, 0 or 1, got {label!r}")
        first, second, orientation = _canonical(pair)
        pid = pair_id(pair.prompt, pair.response_a, pair.response_b)
        canonical = label * orientation
        now = time.time()
        payload = json.dumps(meta or {})
        with self._transaction():
            self.db.execute(
                "INSERT INTO pairs (id, prompt, first, second, asked_by, run_id, asked_at) "
                "VALUES (?, ?, ?, ?, ?, '', ?) ON CONFLICT DO NOTHING", (pid, pair.prompt, first, second, annotator, now))
            self._vote(pid, canonical, annotator, now, payload)
            self.db.execute("DELETE FROM queue WHERE pair_id = ?", (pid,))

    def label(self, pair: UnlabelledPair) -> int | None:
        """The stored label relative to this pair's order, or None if not answered."""
        _, _, orientation = _canonical(pair)
        row = self.db.execute("SELECT label FROM pairs WHERE id = ?",
                              (pair_id(pair.prompt, pair.response_a, pair.response_b),)).fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0]) * orientation

    def labels(self, pairs: list[UnlabelledPair]) -> list[int | None]:
        return [self.label(p) for p in pairs]

    def unanswered_before(self, pair: UnlabelledPair, run_id: str, before: float) -> bool:
        """Asked by `run_id` before time `before` and never answered: an answer lost in a crash."""
        row = self.db.execute("SELECT 1 FROM pairs WHERE id = ? AND run_id = ? AND label IS NULL AND asked_at < ?",
                              (pair_id(pair.prompt, pair.response_a, pair.response_b), run_id, before)).fetchone()
        return row is not None

    def record_audit(self, pair: UnlabelledPair, run_id: str, guess: int, confidence: float) -> None:
        """Keep the policy's guess (+1: response_a wins) on a pair `run_id` asked as an audit, and the confidence
        |m| it was made with, to be compared with its label when it arrives; kept in the ledger, so the audit
        history survives a restart."""
        _, _, orientation = _canonical(pair)
        self.db.execute("INSERT INTO audits (pair_id, run_id, guess, at, confidence) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING", (pair_id(pair.prompt, pair.response_a, pair.response_b), run_id,
                                                   guess * orientation, time.time(), abs(confidence)))

    def audit_outcomes(self, run_id: str) -> tuple[list[bool], list[float], int]:
        """`run_id`'s audits: whether each answered one agreed with the guess and the confidence it was asked
        at, in the order the answers came (ties left out), and how many audits it asked in all. An audit kept
        by a version that did not store its confidence counts as the least confident (0)."""
        rows = self.db.execute("SELECT a.guess, p.label, a.confidence FROM audits a JOIN pairs p ON p.id = a.pair_id "
                               "WHERE a.run_id = ? ORDER BY p.answered_at, a.at", (run_id,)).fetchall()
        answered = [(guess == label, confidence or 0.0) for guess, label, confidence in rows if label not in (None, 0)]
        return [agree for agree, _ in answered], [level for _, level in answered], len(rows)

    def pending(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM pairs WHERE label IS NULL ORDER BY asked_at")]

    def counts(self, run_id: str | None = None) -> dict[str, int]:
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        queried, answered, ties = self.db.execute(
            f"SELECT COUNT(*), COUNT(label), COALESCE(SUM(CASE WHEN label = 0 THEN 1 ELSE 0 END), 0) FROM pairs {where}",
            args).fetchone()
        return {"queried": queried, "answered": answered, "pending": queried - answered, "ties": ties}

    def enqueue(self, pair: UnlabelledPair, priority: float) -> None:
        """Put an asked pair on the queue people label from (higher priority first)."""
        pid = pair_id(pair.prompt, pair.response_a, pair.response_b)
        self.db.execute("INSERT INTO queue (pair_id, priority, enqueued_at) VALUES (?, ?, ?) ON CONFLICT (pair_id) "
                        "DO UPDATE SET priority = excluded.priority, enqueued_at = excluded.enqueued_at",
                        (pid, priority, time.time()))

    def answered_since(self, since: float) -> list[tuple[str, str, str, str, int, float]]:
        """(id, prompt, first, second, canonical label, answered_at) of answers recorded after `since`."""
        return list(self.db.execute("SELECT id, prompt, first, second, label, answered_at FROM pairs "
                                    "WHERE label IS NOT NULL AND answered_at > ? ORDER BY answered_at", (since,)))

    # ---- people: the annotation app (frugalign.annotate) ---------------------------------------------
    def add_annotator(self, name: str, admin: bool = False, expires_in_days: float | None = None) -> str:
        """A new annotator and their bearer token (only its hash is stored: the token is shown once). An
        admin may also export every label; a token with `expires_in_days` stops working after that."""
        token = secrets.token_urlsafe(24)
        now = time.time()
        expires_at = now + expires_in_days * 86400 if expires_in_days is not None else None
        try:
            self.db.execute("INSERT INTO annotators (name, token_hash, created_at, admin, expires_at) VALUES (?, ?, ?, ?, ?)",
                            (name, _hash(token), now, int(admin), expires_at))
        except self.integrity_errors:
            raise UserError(f"{self.where}: an annotator named '{name}' exists already") from None
        return token

    def revoke(self, name: str) -> None:
        """`name`'s token stops working now (their labels stay)."""
        with self._transaction():
            if not self.db.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone():
                raise UserError(f"{self.where}: no annotator named '{name}'")
            self.db.execute("UPDATE annotators SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                            (time.time(), name))

    def annotator(self, token: str) -> str | None:
        """The name of the annotator whose token this is; None for an unknown, revoked or expired one."""
        row = self.db.execute("SELECT name FROM annotators WHERE token_hash = ? AND revoked_at IS NULL "
                              "AND (expires_at IS NULL OR expires_at > ?)", (_hash(token), time.time())).fetchone()
        return row[0] if row else None

    def is_admin(self, name: str) -> bool:
        row = self.db.execute("SELECT admin FROM annotators WHERE name = ?", (name,)).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _taken(pair: str) -> str:
        """SQL: a pair's labels given, plus its holds by people other than the annotator that have not
        lapsed (parameters: that annotator, the time at or before which a hold has lapsed)."""
        return (f"((SELECT COUNT(*) FROM votes v WHERE v.pair_id = {pair}) + (SELECT COUNT(*) FROM assignments h "
                f"WHERE h.pair_id = {pair} AND h.annotator != ? AND h.answered_at IS NULL AND h.skipped_at IS NULL "
                "AND h.assigned_at > ?))")

    def assign(self, annotator: str, labels_per_pair: int = 1, lease_s: float = LEASE_S) -> dict | None:
        """The pair `annotator` should label next: their open assignment while they hold it (or, lapsed,
        while the pair still needs a label: the hold is renewed), else the queued pair of highest priority
        that still needs a label, from someone who has not been given it (or skipped it), counting others'
        holds (a hold lapses after `lease_s`). Which response is shown as A is drawn at random and recorded. None when
        nothing is left."""
        now = time.time()
        lapsed = now - lease_s
        with self._transaction():
            row = self.db.execute(
                "SELECT a.pair_id, a.first_shown_as FROM assignments a JOIN queue q ON q.pair_id = a.pair_id "
                "WHERE a.annotator = ? AND a.answered_at IS NULL AND a.skipped_at IS NULL "
                f"AND (a.assigned_at > ? OR {self._taken('a.pair_id')} < ?) ORDER BY a.assigned_at DESC LIMIT 1",
                (annotator, lapsed, annotator, lapsed, labels_per_pair)).fetchone()
            if row is not None:
                self.db.execute("UPDATE assignments SET assigned_at = ? WHERE pair_id = ? AND annotator = ? "
                                "AND assigned_at <= ?", (now, row[0], annotator, lapsed))
            else:
                candidate = self.db.execute(
                    "SELECT q.pair_id FROM queue q WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE "
                    f"a.pair_id = q.pair_id AND a.annotator = ?) AND {self._taken('q.pair_id')} < ? "
                    "ORDER BY q.priority DESC, q.enqueued_at LIMIT 1", (annotator, annotator, lapsed, labels_per_pair)
                ).fetchone()
                if candidate is None:
                    return None
                row = (candidate[0], secrets.choice(["A", "B"]))
                self.db.execute("INSERT INTO assignments (pair_id, annotator, first_shown_as, assigned_at) "
                                "VALUES (?, ?, ?, ?)", (row[0], annotator, row[1], now))
        prompt, first, second = self.db.execute("SELECT prompt, first, second FROM pairs WHERE id = ?",
                                                (row[0],)).fetchone()
        a, b = (first, second) if row[1] == "A" else (second, first)
        return {"pair_id": row[0], "prompt": prompt, "a": a, "b": b}

    def submit(self, annotator: str, pair_id: str, choice: str, comment: str = "", labels_per_pair: int = 1,
               lease_s: float = LEASE_S) -> None:
        """Store `annotator`'s answer (A, B or tie, as they saw the pair) to a pair assigned to them,
        committed before this returns. An answer after the hold lapsed is stored only while the pair
        still needs a label, counting others' holds: a pair never gets more than `labels_per_pair`.
        KeyError: not assigned to them; ValueError: answered already, or too late."""
        now = time.time()
        lapsed = now - lease_s
        with self._transaction():
            row = self.db.execute("SELECT first_shown_as, answered_at, assigned_at FROM assignments "
                                  "WHERE pair_id = ? AND annotator = ? AND skipped_at IS NULL",
                                  (pair_id, annotator)).fetchone()
            if row is None:
                raise KeyError(pair_id)
            if row[1] is not None:
                raise ValueError(f"pair {pair_id} was answered already by {annotator}")
            if row[2] <= lapsed:
                taken = self.db.execute(f"SELECT {self._taken('?')}", (pair_id, pair_id, annotator, lapsed)).fetchone()[0]
                if taken >= labels_per_pair:
                    raise ValueError(f"your hold on pair {pair_id} lapsed ({lease_s:.0f} s) and the pair has since been "
                                     "labelled or given to someone else: this answer is not stored; ask for your next pair")
            shown = {"A": 1, "B": -1, "tie": 0}[choice]
            self._vote(pair_id, shown if row[0] == "A" else -shown, annotator, now,
                       json.dumps({"comment": comment, "first_shown_as": row[0]}))
            self.db.execute("UPDATE assignments SET answered_at = ? WHERE pair_id = ? AND annotator = ?",
                            (now, pair_id, annotator))
            votes = self.db.execute("SELECT COUNT(*) FROM votes WHERE pair_id = ?", (pair_id,)).fetchone()[0]
            if votes >= labels_per_pair:
                self.db.execute("DELETE FROM queue WHERE pair_id = ?", (pair_id,))

    def skip(self, annotator: str, pair_id: str) -> None:
        """`annotator` passes on the pair assigned to them: it is never given to them again, and their hold
        ends at once, so someone else can take it. KeyError: no open assignment of that pair to them."""
        with self._transaction():
            done = self.db.execute("UPDATE assignments SET skipped_at = ? WHERE pair_id = ? AND annotator = ? "
                                   "AND answered_at IS NULL AND skipped_at IS NULL", (time.time(), pair_id, annotator))
            if done.rowcount == 0:
                raise KeyError(pair_id)

    def undo(self, annotator: str, within_s: float = LEASE_S) -> str:
        """Reopen `annotator`'s latest answer, given in the last `within_s` seconds, so they can answer again
        (a mis-click): the vote moves to `retracted_votes` (kept, never deleted), the pair's label is the
        next vote's or none, and the pair is theirs again. A run that read the label before keeps what it
        read. The pair's id; KeyError when there is no answer of theirs that recent."""
        now = time.time()
        with self._transaction():
            row = self.db.execute("SELECT pair_id, label, at, meta FROM votes WHERE annotator = ? AND at > ? "
                                  "AND pair_id IN (SELECT pair_id FROM assignments WHERE annotator = ?) "
                                  "ORDER BY at DESC LIMIT 1", (annotator, now - within_s, annotator)).fetchone()
            if row is None:
                raise KeyError(annotator)
            pid, label, at, meta = row
            self.db.execute("INSERT INTO retracted_votes (pair_id, label, annotator, at, meta, retracted_at) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (pid, label, annotator, at, meta, now))
            self.db.execute("DELETE FROM votes WHERE pair_id = ? AND annotator = ? AND at = ?", (pid, annotator, at))
            if self.db.execute("SELECT 1 FROM pairs WHERE id = ? AND answered_by = ? AND answered_at = ?",
                               (pid, annotator, at)).fetchone():  # it was the pair's label: the next vote is
                nxt = self.db.execute("SELECT label, annotator, at, meta FROM votes WHERE pair_id = ? ORDER BY at "
                                      "LIMIT 1", (pid,)).fetchone() or (None, None, None, None)
                self.db.execute("UPDATE pairs SET label = ?, answered_by = ?, answered_at = ?, meta = ? WHERE id = ?",
                                (*nxt, pid))
            self.db.execute("UPDATE assignments SET answered_at = NULL, assigned_at = ? WHERE pair_id = ? AND "
                            "annotator = ?", (now, pid, annotator))
            top = self.db.execute("SELECT MAX(priority) FROM queue").fetchone()[0]
            self.db.execute("INSERT INTO queue (pair_id, priority, enqueued_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                            (pid, top if top is not None else 0.0, now))
        return pid

    def progress(self, annotator: str) -> dict[str, int]:
        """`labelled_by_you`; `left_for_you`: queued pairs this annotator has not answered or skipped (some
        may go to others first); `pairs_waiting`: every queued pair."""
        done = self.db.execute("SELECT COUNT(*) FROM votes WHERE annotator = ?", (annotator,)).fetchone()[0]
        left = self.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        mine = self.db.execute("SELECT COUNT(*) FROM queue q WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE "
                               "a.pair_id = q.pair_id AND a.annotator = ? AND (a.answered_at IS NOT NULL OR "
                               "a.skipped_at IS NOT NULL))", (annotator,)).fetchone()[0]
        return {"labelled_by_you": done, "left_for_you": mine, "pairs_waiting": left}

    def add_study_pair(self, study: str, prompt: str, model_a: str, model_b: str) -> None:
        """A pairwise-study question (model A's answer against model B's), queued for people."""
        pair = UnlabelledPair(prompt, model_a, model_b)
        self.ask(pair, "human", f"study:{study}")
        self.enqueue(pair, 0.0)
        self.db.execute("INSERT INTO studies (pair_id, study, model_a_is_first) VALUES (?, ?, ?) ON CONFLICT (pair_id) "
                        "DO UPDATE SET study = excluded.study, model_a_is_first = excluded.model_a_is_first",
                        (pair_id(prompt, model_a, model_b), study, int(_canonical(pair)[2] == 1)))

    def set_study_models(self, study: str, model_a: str, model_b: str) -> None:
        """The names of a study's two models, for its report."""
        for side, name in (("a", model_a), ("b", model_b)):
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                            "excluded.value", (f"study/{study}/model_{side}", name))

    def study_models(self, study: str) -> tuple[str, str]:
        """(model A's name, model B's name), or ("model A", "model B") for a study imported without them."""
        return (self._meta(f"study/{study}/model_a") or "model A", self._meta(f"study/{study}/model_b") or "model B")

    def studies(self) -> dict[str, dict[str, int]]:
        """Each study in the ledger: its pairs and how many of them have a label."""
        rows = self.db.execute("SELECT s.study, COUNT(*), COUNT(p.label) FROM studies s JOIN pairs p ON p.id = s.pair_id "
                               "GROUP BY s.study ORDER BY s.study").fetchall()
        return {study: {"pairs": pairs, "labelled": labelled} for study, pairs, labelled in rows}

    def study_votes(self, study: str) -> dict[str, list[int]]:
        """Every vote of a study, per pair, from model A's side (+1: A's answer preferred)."""
        out: dict[str, list[int]] = {}
        for pid, label, a_first in self.db.execute(
                "SELECT v.pair_id, v.label, s.model_a_is_first FROM votes v JOIN studies s ON s.pair_id = v.pair_id "
                "WHERE s.study = ? ORDER BY v.at", (study,)):
            out.setdefault(pid, []).append(label if a_first else -label)
        return out

    def preference_rows(self) -> list[dict]:
        """Every answered, non-tie pair in TRL's preference format (prompt, chosen, rejected)."""
        rows = []
        for prompt, first, second, label in self.db.execute(
                "SELECT prompt, first, second, label FROM pairs WHERE label IS NOT NULL AND label != 0 "
                "ORDER BY answered_at"):
            chosen, rejected = (first, second) if label > 0 else (second, first)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        return rows

    def export(self, path: str | Path, format: str = "jsonl") -> dict[str, int]:
        """`preference_rows` written as JSONL or a save_to_disk dataset."""
        rows = self.preference_rows()
        ties = self.db.execute("SELECT COUNT(*) FROM pairs WHERE label = 0").fetchone()[0]
        path = Path(path)
        if format == "jsonl":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        elif format == "hf":
            import datasets

            datasets.Dataset.from_list(rows).save_to_disk(str(path))
        else:
            raise UserError(f"unknown export format '{format}' (jsonl, hf)")
        return {"written": len(rows), "ties_skipped": ties}

    def close(self) -> None:
        self.db.close()

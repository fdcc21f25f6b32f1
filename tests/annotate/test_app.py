"""The annotation app through its JSON API: tokens, assignment, validation, storage, studies."""

import base64
import hashlib
import json
import re
import socket
import sqlite3

import pytest
from fastapi.testclient import TestClient

from frugalign.active.ledger import LEASE_S, LabelLedger
from frugalign.annotate.app import MAX_BODY, create_app
from frugalign.annotate.commands import serve_in_thread
from frugalign.bench.annotate import free_port
from frugalign.cli import main
from frugalign.data import UnlabelledPair

PAIRS = [UnlabelledPair(f"question {i}?", f"good answer {i}", f"bad answer {i}") for i in range(3)]


@pytest.fixture
def ledger_path(tmp_path):
    """A ledger with three pairs queued (as ADPO's human queue leaves them) and two annotators."""
    path = tmp_path / "labels.sqlite"
    ledger = LabelLedger(path)
    for k, pair in enumerate(PAIRS):
        ledger.ask(pair, "human", "run")
        ledger.enqueue(pair, priority=-k)  # the first pair is the most useful
    ledger.close()
    return path


def token(path, name, **options):
    ledger = LabelLedger(path)
    try:
        return ledger.add_annotator(name, **options)
    finally:
        ledger.close()


def client(path, k=1):
    return TestClient(create_app(path, labels_per_pair=k))


def auth(t):
    return {"Authorization": f"Bearer {t}"}


def answer_good(c, t, pair):
    """Choose whichever side shows the good answer, as a person would."""
    choice = "A" if pair["a"].startswith("good") else "B"
    return c.post("/api/label", headers=auth(t), json={"pair_id": pair["pair_id"], "choice": choice, "comment": "ok"})


def test_no_access_without_a_valid_token(ledger_path):
    c = client(ledger_path)
    assert c.get("/api/next").status_code == 401
    assert c.get("/api/next", headers=auth("not-a-token")).status_code == 401
    assert c.post("/api/label", json={"pair_id": "0" * 64, "choice": "A"}).status_code == 401
    assert c.get("/api/export").status_code == 401


def test_label_flow_most_useful_first_and_stored_in_canonical_order(ledger_path):
    t = token(ledger_path, "ann")
    c = client(ledger_path)
    seen = []
    while (pair := c.get("/api/next", headers=auth(t)).json()["pair"]) is not None:
        assert c.get("/api/next", headers=auth(t)).json()["pair"] == pair  # the same pair until answered
        seen.append(pair["prompt"])
        assert answer_good(c, t, pair).json()["stored"] is True
    assert seen == ["question 0?", "question 1?", "question 2?"]
    ledger = LabelLedger(ledger_path)
    assert ledger.labels(PAIRS) == [1, 1, 1]  # whatever side each was shown on, the good answer won
    orders = [json.loads(m)["first_shown_as"] for (m,) in ledger.db.execute("SELECT meta FROM votes")]
    assert set(orders) <= {"A", "B"}
    assert c.get("/api/export", headers=auth(t)).status_code == 403  # an annotator sees only their own work
    export = c.get("/api/export", headers=auth(token(ledger_path, "boss", admin=True))).json()
    assert sorted(r["chosen"] for r in export) == ["good answer 0", "good answer 1", "good answer 2"]


def test_bad_input_gets_clear_4xx(ledger_path):
    t = token(ledger_path, "ann")
    c = client(ledger_path)
    pair = c.get("/api/next", headers=auth(t)).json()["pair"]
    assert c.post("/api/label", headers=auth(t), json={"pair_id": pair["pair_id"], "choice": "C"}).status_code == 422
    assert c.post("/api/label", headers=auth(t), json={"pair_id": "f" * 64, "choice": "A"}).status_code == 404
    assert c.post("/api/label", headers=auth(t), json={"pair_id": "short", "choice": "A"}).status_code == 422
    huge = {"pair_id": pair["pair_id"], "choice": "A", "comment": "x" * 100_000}
    assert c.post("/api/label", headers=auth(t), json=huge).status_code == 413
    assert answer_good(c, t, pair).status_code == 200
    again = c.post("/api/label", headers=auth(t), json={"pair_id": pair["pair_id"], "choice": "B"})
    assert again.status_code == 409  # answered already: the first answer stands
    assert LabelLedger(ledger_path).label(PAIRS[0]) == 1


def test_an_annotator_labels_only_what_is_assigned_to_them(ledger_path):
    alice, bob = token(ledger_path, "alice"), token(ledger_path, "bob")
    c = client(ledger_path)
    mine = c.get("/api/next", headers=auth(alice)).json()["pair"]
    theirs = c.get("/api/next", headers=auth(bob)).json()["pair"]
    assert mine["pair_id"] != theirs["pair_id"]  # one label per pair: nobody is given a pair someone holds
    assert c.post("/api/label", headers=auth(bob), json={"pair_id": mine["pair_id"], "choice": "A"}).status_code == 404


def test_k_labels_per_pair_for_agreement(ledger_path):
    alice, bob = token(ledger_path, "alice"), token(ledger_path, "bob")
    c = client(ledger_path, k=2)
    for t in (alice, bob):
        while (pair := c.get("/api/next", headers=auth(t)).json()["pair"]) is not None:
            answer_good(c, t, pair)
    votes = [n for (n,) in LabelLedger(ledger_path).db.execute("SELECT COUNT(*) FROM votes GROUP BY pair_id")]
    assert votes == [2, 2, 2]


def lapse(path, name):
    """Move `name`'s holds back past the lease, as if they had walked away for longer than it."""
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE assignments SET assigned_at = assigned_at - ? WHERE annotator = ?", (LEASE_S + 1, name))
    db.close()


def test_a_late_answer_to_a_lapsed_hold_is_stored_only_while_the_pair_needs_a_label(ledger_path):
    alice, bob, carol = token(ledger_path, "alice"), token(ledger_path, "bob"), token(ledger_path, "carol")
    c = client(ledger_path)
    first = c.get("/api/next", headers=auth(alice)).json()["pair"]
    lapse(ledger_path, "alice")
    assert c.get("/api/next", headers=auth(bob)).json()["pair"]["pair_id"] == first["pair_id"]  # alice lapsed: bob holds it
    late = answer_good(c, alice, first)
    assert late.status_code == 409 and "lapsed" in late.json()["detail"]
    second = c.get("/api/next", headers=auth(alice)).json()["pair"]
    assert second["pair_id"] != first["pair_id"]  # alice moves on rather than seeing bob's pair again
    assert answer_good(c, bob, first).status_code == 200
    lapse(ledger_path, "alice")
    assert answer_good(c, alice, second).status_code == 200  # lapsed, but nobody else took it: still needed
    third = c.get("/api/next", headers=auth(bob)).json()["pair"]
    lapse(ledger_path, "bob")
    assert c.get("/api/next", headers=auth(carol)).json()["pair"]["pair_id"] == third["pair_id"]
    assert answer_good(c, carol, third).status_code == 200
    assert answer_good(c, bob, third).status_code == 409  # carol labelled it meanwhile
    votes = [n for (n,) in LabelLedger(ledger_path).db.execute("SELECT COUNT(*) FROM votes GROUP BY pair_id")]
    assert votes == [1, 1, 1]  # --labels-per-pair 1: one label per pair, whoever was late


def test_labels_per_pair_must_be_at_least_one(ledger_path, capsys):
    for k in ("0", "-2", "x"):
        with pytest.raises(SystemExit) as exit_:
            main(["annotate", "serve", "--db", str(ledger_path), "--labels-per-pair", k])
        assert exit_.value.code == 2 and "--labels-per-pair" in capsys.readouterr().err
    with pytest.raises(ValueError, match="labels_per_pair"):
        create_app(ledger_path, labels_per_pair=0)


def test_add_annotator_prints_the_token_last(tmp_path, capsys):
    db = tmp_path / "l.sqlite"
    assert main(["annotate", "add-annotator", "ann", "--db", str(db)]) == 0
    t = capsys.readouterr().out.strip().splitlines()[-1]
    assert LabelLedger(db).annotator(t) == "ann"
    assert main(["annotate", "add-annotator", "ann", "--db", str(db)]) == 2  # names are unique


HOSTILE = ["<script>window.pwned = 1</script>", "<img src=x onerror='window.pwned = 1'>",
           "[click](javascript:alert(1))", "[click](JaVaScRiPt:alert(1))", "[data](data:text/html,<b>x</b>)",
           "![pixel](https://tracker.example/p.png)", '<a href="https://x" onclick="alert(1)">x</a>',
           "[ftp](ftp://files.example/x)"]


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_shows_raw_html_as_text_and_keeps_only_web_links(text):
    from frugalign.annotate.page import render_markdown

    html = render_markdown(text)
    assert "<script" not in html and "<img" not in html and not re.search(r"<[^>]*\son\w+=", html)
    assert not re.search(r"href=\"(?!https?:|mailto:)", html, re.I)  # no javascript:, data:, ftp: ... links


def test_markdown_renders_code_tables_and_line_breaks():
    from frugalign.annotate.page import render_markdown

    html = render_markdown("Line one\nline two\n\n```python\nprint('<b>')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                           "[docs](https://example.org)")
    assert "Line one<br" in html and "<pre><code class=\"language-python\">print('&lt;b&gt;')" in html
    assert "<table>" in html and "<td>2</td>" in html and '<a href="https://example.org">docs</a>' in html


def test_the_page_gets_pairs_as_server_rendered_html_with_hostile_markup_as_text(tmp_path):
    path = tmp_path / "labels.sqlite"
    ledger = LabelLedger(path)
    pair = UnlabelledPair("Write **bold** code", HOSTILE[0], "`x = 1`")
    ledger.ask(pair, "human", "run")
    ledger.enqueue(pair, 0.0)
    ledger.close()
    t = token(path, "ann")
    got = client(path).get("/api/next", headers=auth(t)).json()["pair"]
    assert got["prompt"] == "Write **bold** code" and got["html"]["prompt"] == "<p>Write <strong>bold</strong> code</p>\n"
    rendered = {got["html"]["a"], got["html"]["b"]}
    assert "<p>&lt;script&gt;window.pwned = 1&lt;/script&gt;</p>\n" in rendered and "<p><code>x = 1</code></p>\n" in rendered


def test_skip_passes_the_pair_to_someone_else_and_never_back(ledger_path):
    c = client(ledger_path)
    ann, other = token(ledger_path, "ann"), token(ledger_path, "other")
    first = c.get("/api/next", headers=auth(ann)).json()["pair"]
    assert c.post("/api/skip", headers=auth(ann), json={"pair_id": first["pair_id"]}).status_code == 200
    # the hold ended at once: the other annotator gets it now, not after the lease
    assert c.get("/api/next", headers=auth(other)).json()["pair"]["pair_id"] == first["pair_id"]
    seen = []
    while (pair := c.get("/api/next", headers=auth(ann)).json()["pair"]) is not None:
        seen.append(pair["pair_id"])
        assert answer_good(c, ann, pair).status_code == 200
    assert first["pair_id"] not in seen and len(seen) == 2
    # a skipped pair cannot be answered, nor skipped twice
    assert answer_good(c, ann, first).status_code == 404
    assert c.post("/api/skip", headers=auth(ann), json={"pair_id": first["pair_id"]}).status_code == 404
    assert c.post("/api/skip", headers=auth(ann), json={"pair_id": "x"}).status_code == 422


def test_undo_reopens_the_latest_answer_and_keeps_the_replaced_vote(ledger_path):
    c = client(ledger_path)
    ann = token(ledger_path, "ann")
    assert c.post("/api/undo", headers=auth(ann)).status_code == 409  # nothing answered yet
    pair = c.get("/api/next", headers=auth(ann)).json()["pair"]
    wrong = "B" if pair["a"].startswith("good") else "A"  # a mis-click
    stored = c.post("/api/label", headers=auth(ann), json={"pair_id": pair["pair_id"], "choice": wrong})
    assert stored.json()["progress"]["labelled_by_you"] == 1
    undone = c.post("/api/undo", headers=auth(ann))
    assert undone.status_code == 200 and undone.json()["reopened"] == pair["pair_id"]
    assert undone.json()["progress"]["labelled_by_you"] == 0
    ledger = LabelLedger(ledger_path)
    assert ledger.label(PAIRS[0]) is None  # the mis-click is no longer the pair's label
    again = c.get("/api/next", headers=auth(ann)).json()["pair"]
    assert again == pair  # the same pair, shown the same way round
    assert answer_good(c, ann, again).status_code == 200
    assert ledger.label(PAIRS[0]) == 1
    (kept,) = ledger.db.execute("SELECT label, annotator FROM retracted_votes").fetchall()
    (final,) = ledger.db.execute("SELECT label FROM pairs WHERE label IS NOT NULL").fetchone()
    assert kept == (-final, "ann")  # the mis-click, kept, the other way from the corrected label
    assert ledger.db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 1


def test_undo_is_only_for_recent_answers(ledger_path):
    ledger = LabelLedger(ledger_path)
    ledger.add_annotator("ann")
    pair = ledger.assign("ann")
    ledger.submit("ann", pair["pair_id"], "A")
    with pytest.raises(KeyError):
        ledger.undo("ann", within_s=0.0)
    assert ledger.undo("ann") == pair["pair_id"]


def test_progress_counts_what_is_left_for_this_annotator(ledger_path):
    c = client(ledger_path)
    ann = token(ledger_path, "ann")
    assert c.get("/api/next", headers=auth(ann)).json()["progress"] == {"labelled_by_you": 0, "left_for_you": 3,
                                                                         "pairs_waiting": 3}
    pair = c.get("/api/next", headers=auth(ann)).json()["pair"]
    progress = answer_good(c, ann, pair).json()["progress"]
    assert progress == {"labelled_by_you": 1, "left_for_you": 2, "pairs_waiting": 2}
    pair = c.get("/api/next", headers=auth(ann)).json()["pair"]
    progress = c.post("/api/skip", headers=auth(ann), json={"pair_id": pair["pair_id"]}).json()["progress"]
    assert progress == {"labelled_by_you": 1, "left_for_you": 1, "pairs_waiting": 2}


def test_instructions_are_rendered_and_a_bad_file_is_one_line(ledger_path, tmp_path, capsys):
    t = token(ledger_path, "ann")
    app = TestClient(create_app(ledger_path, instructions="# Rules\nPrefer the **shorter** answer. <b>x</b>"))
    html = app.get("/api/instructions", headers=auth(t)).json()["html"]
    assert "<h1>Rules</h1>" in html and "<strong>shorter</strong>" in html and "&lt;b&gt;" in html
    assert client(ledger_path).get("/api/instructions", headers=auth(t)).json() == {"html": ""}
    assert client(ledger_path).get("/api/instructions").status_code == 401
    assert main(["annotate", "serve", "--db", str(ledger_path), "--instructions", str(tmp_path / "none.md")]) == 2
    assert "--instructions" in capsys.readouterr().err
    latin = tmp_path / "latin.md"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    assert main(["annotate", "serve", "--db", str(ledger_path), "--instructions", str(latin)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_pairwise_study_win_score_and_agreement(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    prompts = [f"p{i}" for i in range(4)]
    a.write_text("".join(json.dumps({"instruction": p, "output": f"A's answer to {p}", "generator": "dpo-run"}) + "\n"
                         for p in prompts))
    b.write_text("".join(json.dumps({"instruction": p, "output": f"B's answer to {p}"}) + "\n" for p in prompts))
    db = tmp_path / "study.sqlite"
    assert main(["annotate", "import-study", "--db", str(db), "--model-a", str(a), "--model-b", str(b)]) == 0
    assert main(["annotate", "report", "--db", str(db)]) == 2
    assert "study 'study' has no labels yet (0 of 4 pairs labelled)" in capsys.readouterr().err
    assert main(["annotate", "report", "--db", str(db), "--study", "other"]) == 2
    assert "no study 'other'; its studies: 'study' (0 of 4 pairs labelled)" in capsys.readouterr().err
    alice, bob = token(db, "alice"), token(db, "bob")
    c = client(db, k=2)
    for t in (alice, bob):
        while (pair := c.get("/api/next", headers=auth(t)).json()["pair"]) is not None:
            a_side = "A" if pair["a"].startswith("A's") else "B"
            choice = a_side if pair["prompt"] != "p3" else ("tie" if t == alice else a_side)
            c.post("/api/label", headers=auth(t), json={"pair_id": pair["pair_id"], "choice": choice})
    out = tmp_path / "report.json"
    assert main(["annotate", "report", "--db", str(db), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == 4 and result["wins"] == 4 and result["win_score"] == 150.0
    assert result["raw_agreement"] == 0.75 and result["pairs_with_several_labels"] == 4
    # the models are named as their answers files name them (the generator field, else the file's name)
    assert (result["model_a"], result["model_b"]) == ("dpo-run", "b")
    assert "dpo-run (A) against b (B)" in capsys.readouterr().out


def test_old_ledgers_open_and_gain_the_app_tables(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    ledger = LabelLedger(path)
    ledger.db.execute("DROP TABLE annotators")
    ledger.db.execute("DROP TABLE assignments")
    ledger.db.execute("DROP TABLE studies")
    ledger.close()
    assert LabelLedger(path).add_annotator("x")
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM annotators").fetchone()[0] == 1


def test_an_old_ledgers_tokens_keep_working_and_gain_expiry_and_admin(tmp_path):
    path = tmp_path / "old.sqlite"
    ledger = LabelLedger(path)
    ledger.db.execute("DROP TABLE annotators")  # as the first ledgers made it
    ledger.db.execute("CREATE TABLE annotators (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, "
                      "created_at REAL NOT NULL)")
    ledger.db.execute("INSERT INTO annotators VALUES ('old', ?, 0)", (hashlib.sha256(b"old-token").hexdigest(),))
    ledger.close()
    ledger = LabelLedger(path)
    assert ledger.annotator("old-token") == "old" and not ledger.is_admin("old")
    assert ledger.annotator(ledger.add_annotator("boss", admin=True, expires_in_days=1)) == "boss"
    assert ledger.is_admin("boss")


def test_revoked_and_expired_tokens_get_401(ledger_path, capsys):
    db = str(ledger_path)
    assert main(["annotate", "add-annotator", "temp", "--db", db, "--expires-in-days", "0.5"]) == 0
    temp = capsys.readouterr().out.strip().splitlines()[-1]
    alice = token(ledger_path, "alice")
    c = client(ledger_path)
    assert c.get("/api/next", headers=auth(temp)).status_code == 200
    assert main(["annotate", "revoke", "alice", "--db", db]) == 0
    assert c.get("/api/next", headers=auth(alice)).status_code == 401
    with sqlite3.connect(ledger_path) as raw:
        raw.execute("UPDATE annotators SET expires_at = expires_at - 86400 WHERE name = 'temp'")  # a day later
    raw.close()
    assert c.get("/api/next", headers=auth(temp)).status_code == 401
    assert main(["annotate", "revoke", "nobody", "--db", db]) == 2 and "no annotator named 'nobody'" in capsys.readouterr().err
    for days in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as exit_:
            main(["annotate", "add-annotator", "x", "--db", db, "--expires-in-days", days])
        assert exit_.value.code == 2 and "--expires-in-days" in capsys.readouterr().err


def test_every_response_has_security_headers_and_the_page_may_run_only_its_own_script(ledger_path):
    c = client(ledger_path)
    t = token(ledger_path, "ann")
    responses = [c.get("/"), c.get("/api/next"), c.get("/api/next", headers=auth(t)), c.get("/nowhere"),
                 c.post("/api/label", headers=auth(t), content=b"x" * (MAX_BODY + 1)), c.get("/docs")]
    for r in responses:
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], r.url
    page, policy = responses[0].text, responses[0].headers["content-security-policy"]
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    for tag in ("script", "style"):  # the page's one inline script and style are allowed by their hash
        (inline,) = re.findall(f"<{tag}>(.*?)</{tag}>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy


def test_a_rejected_input_is_not_echoed_back_whole(ledger_path):
    t = token(ledger_path, "ann")
    c = client(ledger_path)
    pair = c.get("/api/next", headers=auth(t)).json()["pair"]
    long = {"pair_id": pair["pair_id"], "choice": "A", "comment": "x" * 60_000}  # under the body limit, over 2000
    for body in (long, {k: v for k, v in long.items() if k != "choice"}):
        r = c.post("/api/label", headers=auth(t), json=body)
        assert r.status_code == 422 and len(r.content) < 2000 and "characters)" in r.text


@pytest.fixture
def live(ledger_path):
    """The app served by uvicorn on a free loopback port, as `annotate serve` runs it."""
    port = free_port()
    server = serve_in_thread(ledger_path, "127.0.0.1", port)
    yield port
    server.should_exit = True


def chunked(port, headers, chunks):
    """Send a POST /api/label with a chunked body that never ends, then the server's reply (it must answer
    before the body is complete: a server that waits for the rest times out here), and check that the
    server closed the connection after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /api/label HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: application/json\r\n" + headers + b"\r\n")
        for chunk in chunks:
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < body_length(reply):
            part = s.recv(65536)
            assert part, f"the connection closed before the whole reply came: {reply!r}"
            reply += part
        # Closed after the reply: an end of stream, or a reset where the kernel still held unread body
        # bytes when the server closed (a reset after the reply, which any HTTP client reads by its length).
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
    return reply.decode("latin-1")


def body_length(reply: bytes) -> int:
    """The Content-Length of a reply whose headers have all come."""
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    return int(re.search(r"^content-length: *(\d+)", head, re.M).group(1))


def test_a_chunked_body_is_bounded_while_it_streams_and_needs_a_token_first(live, ledger_path):
    reply = chunked(live, b"", [b"x" * 1024])  # no token: refused before the body is read
    assert reply.startswith("HTTP/1.1 401") and "connection: close" in reply.lower()
    t = token(ledger_path, "ann").encode()
    reply = chunked(live, b"Authorization: Bearer " + t + b"\r\n", [b"x" * 16384] * 5)  # 80 KB, and more to come
    assert reply.startswith("HTTP/1.1 413") and f"over {MAX_BODY} bytes" in reply


def test_serve_on_a_port_in_use_says_so_before_printing_a_url(tmp_path, capsys):
    import socket

    db = tmp_path / "l.sqlite"
    LabelLedger(db).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["annotate", "serve", "--db", str(db), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}" in captured.err and "--port" in captured.err
    assert "http://" not in captured.err + captured.out

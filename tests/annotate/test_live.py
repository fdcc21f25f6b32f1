"""The app as people and trainers meet it: a real server process killed mid-submission, a real
browser, and an ADPO run fed through the HTTP API."""

import json
import shutil
import signal
import threading
import time

import pytest

from frugalign.active.ledger import LabelLedger
from frugalign.bench.annotate import free_port, request, start_app
from frugalign.cli import main
from frugalign.data import UnlabelledPair
from tests.conftest import preference_rows


def call(base, path, token, body=None):
    return request(base + path, token, body)


def queue_pairs(db, n):
    ledger = LabelLedger(db)
    pairs = [UnlabelledPair(f"q{i}?", f"good {i}", f"bad {i}") for i in range(n)]
    for pair in pairs:
        ledger.ask(pair, "human", "run")
        ledger.enqueue(pair, 0.0)
    tokens = [ledger.add_annotator(f"ann{k}") for k in range(4)]
    ledger.close()
    return pairs, tokens


@pytest.mark.slow
def test_kill_9_of_the_server_loses_no_acknowledged_label(tmp_path):
    db, port = tmp_path / "labels.sqlite", free_port()
    pairs, tokens = queue_pairs(db, 300)
    base = f"http://127.0.0.1:{port}"
    proc = start_app(db, port)
    acknowledged, stop = [], threading.Event()

    def annotate(token):
        while not stop.is_set():
            try:
                pair = call(base, "/api/next", token)["pair"]
                if pair is None:
                    return
                call(base, "/api/label", token, {"pair_id": pair["pair_id"], "choice": "A"})
                acknowledged.append(pair["pair_id"])  # the server said it is stored
            except OSError:
                return  # the server is gone

    threads = [threading.Thread(target=annotate, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    while len(acknowledged) < 40:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert 40 <= len(acknowledged) < len(pairs), "the kill must land while people are submitting"
    proc = start_app(db, port)  # a restart on the same ledger
    try:
        stored = {pid for (pid,) in LabelLedger(db).db.execute("SELECT pair_id FROM votes")}
        assert set(acknowledged) <= stored
        assert call(base, "/api/next", tokens[0])["pair"] is not None  # and work goes on
    finally:
        proc.kill()
        proc.wait()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed "
                                                      "(make test installs them where it can: apt, root)")
def test_a_person_in_a_real_browser_labels_three_pairs_with_the_keyboard(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    db, port = tmp_path / "labels.sqlite", free_port()
    ledger = LabelLedger(db)
    pairs = [UnlabelledPair(f"q{i}?", f"good {i}", f"bad {i}") for i in range(2)]
    # a model output that is an attack: it must show as text and never run
    pairs.append(UnlabelledPair("q2?", "<script>window.pwned = 1</script><img src=x onerror='window.pwned=1'>", "good 2"))
    for pair in pairs:
        ledger.ask(pair, "human", "run")
        ledger.enqueue(pair, 0.0)
    token = ledger.add_annotator("person")
    ledger.close()
    proc = start_app(db, port)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        browser.find_element(By.ID, "token").send_keys(token + Keys.ENTER)
        wait = WebDriverWait(browser, 15)
        for _ in range(3):
            wait.until(lambda b: b.find_element(By.ID, "prompt").text.startswith("q"))
            prompt = browser.find_element(By.ID, "prompt").text
            a = browser.find_element(By.ID, "a").text
            if prompt == "q2?":
                assert "<script>" in a or "<script>" in browser.find_element(By.ID, "b").text  # shown, as text
            key = "1" if a.startswith("good") else "2"
            browser.find_element(By.TAG_NAME, "body").send_keys(key)
            wait.until(lambda b, p=prompt: b.find_element(By.ID, "prompt").text != p)
        assert "Nothing left to label" in browser.find_element(By.ID, "status").text
        assert browser.execute_script("return window.pwned === undefined")
    finally:
        browser.quit()
        proc.kill()
        proc.wait()
    export = tmp_path / "labels.jsonl"
    assert main(["labels", "export", "--ledger", str(db), "--out", str(export)]) == 0
    rows = [json.loads(x) for x in export.read_text().splitlines()]
    assert sorted(r["chosen"] for r in rows) == ["good 0", "good 1", "good 2"]


@pytest.mark.slow
def test_adpo_fed_by_a_scripted_annotator_through_the_http_api(tmp_path, tiny_model_dir, preference_file):
    """`frugalign adpo --annotator human --serve`: the run queues its uncertain pairs, a script answers them
    through the API as a person would (from the hidden true labels), and the run trains on them."""
    port, out = free_port(), tmp_path / "run"
    db = out / "labels.sqlite"
    ledger = LabelLedger(db)
    token = ledger.add_annotator("script")
    ledger.close()
    truth = {(r["prompt"], r["chosen"]) for r in preference_rows(48)}
    rows = [{"prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"]} for r in preference_rows(48)]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base, answered, done = f"http://127.0.0.1:{port}", [], threading.Event()

    def person():
        while not done.is_set():
            try:
                pair = call(base, "/api/next", token)["pair"]
            except OSError:
                time.sleep(0.05)
                continue
            if pair is None:
                time.sleep(0.02)
                continue
            choice = "A" if (pair["prompt"], pair["a"]) in truth else "B"
            call(base, "/api/label", token, {"pair_id": pair["pair_id"], "choice": choice})
            answered.append(pair["pair_id"])

    script = threading.Thread(target=person, daemon=True)
    script.start()
    try:
        code = main(["adpo", "--model", str(tiny_model_dir), "--dataset", str(pool), "--output-dir", str(out),
                     "--annotator", "human", "--serve", f"127.0.0.1:{port}", "--mode", "dpo", "--num-epochs", "6",
                     "--learning-rate", "2e-3", "--batch-size", "8", "--warmup-ratio", "0"])
    finally:
        done.set()
        script.join(timeout=10)
    assert code == 0 and answered
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(m["trained_pairs"] for m in metrics if "trained_pairs" in m) > 0  # labels arrived and were used
    ledger = LabelLedger(db)
    labelled = ledger.db.execute("SELECT COUNT(*) FROM pairs WHERE label IS NOT NULL").fetchone()[0]
    assert labelled == len(set(answered))
    assert all(ledger.label(UnlabelledPair(r["prompt"], r["response_a"], r["response_b"])) in (None, 1) for r in rows)


def test_serve_refuses_a_missing_ledger(tmp_path, capsys):
    assert main(["annotate", "serve", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no such ledger file" in capsys.readouterr().err


def test_adpo_serve_needs_the_human_annotator(tmp_path, capsys):
    assert main(["adpo", "--dataset", "x.jsonl", "--serve", "127.0.0.1:9", "--output-dir", str(tmp_path)]) == 2
    assert "--serve" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_annotate_quick_loses_nothing(tmp_path):
    import argparse

    from frugalign.bench import annotate as annotate_bench

    parser = argparse.ArgumentParser()
    annotate_bench.add_arguments(parser)
    out = tmp_path / "annotate.json"
    assert annotate_bench.run(parser.parse_args(["--quick", "--out", str(out)])) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["labels"] == 80 and summary["lost_labels"] == 0 and summary["duplicate_labels"] == 0
    assert summary["labels_per_second"] > 0 and summary["label_latency_ms"]["p99"] >= summary["label_latency_ms"]["p50"]

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
def test_kill_9_of_the_server_loses_no_acknowledged_label(ledger_at):
    db, port = ledger_at, free_port()
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


LONG_ANSWER = "A long answer.\n\n" + "\n\n".join(f"Paragraph {i}: " + "words " * 60 for i in range(12))
GUIDELINES = "Prefer the answer that is **correct**; if both are, the shorter one."


def browser_at(width: int, height: int):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    # the viewport emulated exactly (a headless window is at least 500 px wide)
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height,
                                                                          "pixelRatio": 1.0}})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)


def rect(browser, element_id):
    return browser.execute_script(f"return document.getElementById('{element_id}').getBoundingClientRect().toJSON()")


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed "
                                                      "(make test installs them where it can: apt, root)")
def test_a_person_in_a_real_browser_labels_with_the_keyboard_on_desktop_and_phone(tmp_path):
    """Desktop (1280 px) and phone (390 px) widths, screenshots of each: responses side by side or stacked,
    the choice bar on screen below a long answer, Markdown rendered (code in monospace), hostile markup shown
    as text and never run, skip and undo from the keyboard, inline messages (no alert), a done screen."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from frugalign.annotate.commands import serve_in_thread

    db, port = tmp_path / "labels.sqlite", free_port()
    ledger = LabelLedger(db)
    pairs = [UnlabelledPair("q0: write `code`", "good 0\n\n```python\nprint(1)\n```", "bad 0"),
             UnlabelledPair("q1: a long one", "good 1 " + LONG_ANSWER, "bad 1 " + LONG_ANSWER),
             # a model output that is an attack: it must show as text and never run
             UnlabelledPair("q2?", "bad 2 <script>window.pwned = 1</script><img src=x onerror='window.pwned=1'>",
                            "good 2"),
             UnlabelledPair("q3?", "good 3", "bad 3")]
    for k, pair in enumerate(pairs):
        ledger.ask(pair, "human", "run")
        ledger.enqueue(pair, -k)  # shown in this order
    token = ledger.add_annotator("person")
    ledger.close()
    server = serve_in_thread(db, "127.0.0.1", port, instructions=GUIDELINES)
    screens = {}
    try:
        for width, height, labelled in ((1280, 900, [0, 1]), (390, 844, [2, 3])):
            browser = browser_at(width, height)
            try:
                browser.get(f"http://127.0.0.1:{port}/")
                browser.execute_script("window.alerts = 0; window.alert = () => { window.alerts += 1; };")
                wait = WebDriverWait(browser, 15)
                if width == 1280:  # a wrong token: an inline message, no alert box
                    browser.find_element(By.ID, "token").send_keys("wrong" + Keys.ENTER)
                    wait.until(lambda b: "not valid" in b.find_element(By.ID, "message").text)
                    browser.find_element(By.ID, "token").clear()
                browser.find_element(By.ID, "token").send_keys(token + Keys.ENTER)
                body = browser.find_element(By.TAG_NAME, "body")
                for k in labelled:
                    wait.until(lambda b, k=k: b.find_element(By.ID, "prompt").text.startswith(f"q{k}"))
                    assert "correct" in browser.find_element(By.ID, "guidelines").text
                    a, b = rect(browser, "a"), rect(browser, "b")
                    if width == 1280:
                        assert a["top"] == b["top"] and a["right"] <= b["left"]  # side by side
                    else:
                        assert b["top"] >= a["bottom"]  # stacked
                    bar = rect(browser, "bar")
                    assert 0 <= bar["top"] and bar["bottom"] <= height  # the choices stay on screen
                    if k == 0:
                        font = browser.execute_script("return getComputedStyle(document.querySelector('#a code, #b code'))"
                                                      ".fontFamily")
                        assert "mono" in font.lower()
                    if k == 1:
                        assert a["bottom"] > height  # the long answer runs past the screen, the bar does not
                    if k == 2:
                        shown = browser.find_element(By.ID, "a").text + browser.find_element(By.ID, "b").text
                        assert "<script>" in shown  # shown, as text
                        body.send_keys("s")  # skip it, then take it back is not possible: it went to others
                        wait.until(lambda b: b.find_element(By.ID, "prompt").text.startswith("q3"))
                        assert "Skipped" in browser.find_element(By.ID, "message").text
                        continue
                    screens[width] = tmp_path / f"annotate-{width}.png"
                    browser.save_screenshot(str(screens[width]))
                    wrong = "2" if browser.find_element(By.ID, "a").text.startswith("good") else "1"
                    labelled = browser.find_element(By.ID, "progress-text").text.split(" /")[0]
                    body.send_keys(wrong)  # a mis-click ...
                    # the message may still say "Saved" from the previous pair: wait for the count to move, or the
                    # undo below could arrive while the label is in flight, and the page ignores keys until it lands
                    wait.until(lambda b, n=int(labelled) + 1: b.find_element(By.ID, "progress-text").text
                               .startswith(f"{n} /"))
                    body.send_keys("u")  # ... undone: the same pair comes back
                    wait.until(lambda b, k=k: "reopened" in b.find_element(By.ID, "message").text
                               and b.find_element(By.ID, "prompt").text.startswith(f"q{k}"))
                    body.send_keys("1" if wrong == "2" else "2")
                    wait.until(lambda b: "Saved" in b.find_element(By.ID, "message").text)
                if width == 390:
                    wait.until(lambda b: b.find_element(By.ID, "done").is_displayed())
                    assert browser.find_element(By.ID, "done").text.startswith("Done")
                    assert browser.find_element(By.ID, "progress-text").text == "3 / 3"
                    assert not browser.find_element(By.ID, "choose-A").is_displayed()
                assert browser.execute_script("return window.pwned === undefined && window.alerts === 0")
            finally:
                browser.quit()
    finally:
        server.should_exit = True
    from PIL import Image

    for width, path in screens.items():  # real screenshots, of the viewport asked for
        assert Image.open(path).size == (width, {1280: 900, 390: 844}[width])
    export = tmp_path / "labels.jsonl"
    assert main(["labels", "export", "--ledger", str(db), "--out", str(export)]) == 0
    rows = [json.loads(x) for x in export.read_text().splitlines()]
    assert sorted(r["chosen"].split()[:2] for r in rows) == [["good", "0"], ["good", "1"], ["good", "3"]]  # undone: fixed
    ledger = LabelLedger(db)
    assert ledger.db.execute("SELECT COUNT(*) FROM retracted_votes").fetchone()[0] == 3  # the mis-clicks, kept


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
    assert main(["adpo", "--dataset", "x.jsonl", "--serve-instructions", "g.md", "--output-dir", str(tmp_path)]) == 2
    assert "--serve-instructions needs --serve" in capsys.readouterr().err


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

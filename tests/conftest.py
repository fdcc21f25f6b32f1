"""Shared fixtures: a character-level tokenizer and a tiny Llama saved like any hub checkpoint."""

import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,?!+=-"


def char_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for ch in ALPHABET:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama + tokenizer in a directory: the local-checkpoint path of `--model`."""
    from frugalign.models import tiny_causal_lm

    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_causal_lm(len(tokenizer), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable preference: the chosen answer repeats the prompt's letter, the rejected one does not."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample("abcdefghij", 2)
        rows.append({"prompt": f"say {a}{a}?", "chosen": f"{a}{a}{a}", "rejected": f"{b}{b}{b}"})
    return rows


@pytest.fixture
def preference_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(48)))
    return path


class VLLMLike(BaseHTTPRequestHandler):
    """What vLLM's OpenAI server does with a judge's requests (checked against vLLM): GET /v1/models lists the
    served models; a chat request naming any other model gets 404 with vLLM's error body. `answer(prompt)` is
    the reply's text; `delay` seconds pass before each reply."""

    served: list[str] = ["Qwen/Qwen2.5-0.5B-Instruct"]
    answer = staticmethod(lambda prompt: "Answer: A")
    delay = 0.0
    models_seen: list[str] = []

    def log_message(self, *args):
        pass

    def send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "vllm"}
                                                   for m in type(self).served]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).models_seen.append(body["model"])
        if body["model"] not in type(self).served:
            return self.send(404, {"object": "error", "message": f"The model `{body['model']}` does not exist.",
                                   "type": "NotFoundError", "param": None, "code": 404})
        time.sleep(type(self).delay)
        text = type(self).answer(body["messages"][-1]["content"])
        self.send(200, {"object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}})


@pytest.fixture
def vllm_like():
    """A loopback server that answers like vLLM's; set attributes of the yielded class to change it."""
    handler = type("Served", (VLLMLike,), {"models_seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield handler
    httpd.shutdown()
    httpd.server_close()


def postgres_database(request) -> str:
    """A fresh, empty PostgreSQL database on the server `make test` starts (FRUGALIGN_TEST_POSTGRES: a URL
    to it), dropped after the test; the test is skipped, saying why, where no server was started."""
    base = os.environ.get("FRUGALIGN_TEST_POSTGRES")
    if not base:
        pytest.skip("no PostgreSQL server: `make test` starts one and sets FRUGALIGN_TEST_POSTGRES")
    import secrets

    import psycopg

    name = f"frugalign_test_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as admin:  # a server that was started must answer: no skip
        admin.execute(f"CREATE DATABASE {name}")

    def drop():
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    request.addfinalizer(drop)
    head, _, query = base.partition("?")  # the database is the path's last part; host and port may be a query
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_at(request, tmp_path) -> str:
    """Where a test's label ledger lives, once per back end: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "labels.sqlite")
    return postgres_database(request)

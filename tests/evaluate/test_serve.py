"""`frugalign serve` attacked: every bad request gets a JSON error, never a dropped connection; prompts the
model cannot take are refused; a client that leaves stops its generation."""

import http.client
import json
import socket
import threading
import time

import pytest

from frugalign.serve import MAX_BODY, ChatServer

CONTEXT = 512  # the tiny model's max_position_embeddings


@pytest.fixture(scope="module")
def server():
    """The server on a tiny random model, in a thread of this process (its model can be watched), on loopback."""
    from frugalign import models

    tok = models.load_tokenizer(None)
    model = models.tiny_causal_lm(len(tok), seed=0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                  max_positions=CONTEXT).eval()
    httpd = ChatServer(("127.0.0.1", 0), model, tok, "tiny", 400)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def post(server, body: bytes, headers: dict) -> tuple[int, dict]:
    """Send raw bytes with exactly these headers; the status and the JSON reply (a dropped connection raises)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.putrequest("POST", "/v1/chat/completions", skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(body)
    response = conn.getresponse()
    status, reply = response.status, json.loads(response.read())
    conn.close()
    return status, reply


def ask(server, body) -> tuple[int, dict]:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return post(server, data, {"Content-Length": str(len(data)), "Content-Type": "application/json"})


HELLO = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("headers, status", [
    ({"Content-Length": "-1"}, 400),  # read until the client closed: 400 MB once
    ({"Content-Length": "lots"}, 400),
    ({}, 411),  # no length: the body is not read at all
    ({"Content-Length": str(MAX_BODY + 1)}, 413),
])
def test_a_bad_content_length_gets_an_error_without_reading_the_body(server, headers, status):
    code, reply = post(server, b'{"messages": []}', headers)
    assert code == status and reply["error"]["message"]


@pytest.mark.parametrize("body, words", [
    ({"messages": HELLO, "max_tokens": -5}, "max_tokens must be a whole number >= 1, got -5"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}', "max_tokens must be a whole number"),
    ({"messages": HELLO, "max_tokens": "many"}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": True}, "max_tokens"),
    ({"messages": HELLO, "temperature": -1}, "temperature must be a number from 0 to 2"),
    ({"messages": HELLO, "temperature": 10 ** 400}, "temperature"),
    ([HELLO], "a JSON object"),
    ({"messages": "hello"}, "messages must be"),
    ({"message": HELLO}, "no 'messages' field"),
    (b"[" * 100_000, "bad request"),  # nested past Python's recursion limit
    (b'{"messages": "\xff"}', "bad request"),  # not UTF-8
])
def test_bad_fields_get_a_400_naming_what_was_wrong(server, body, words):
    code, reply = ask(server, body)
    assert code == 400 and words in reply["error"]["message"]


def test_a_prompt_longer_than_the_context_is_refused(server):
    code, reply = ask(server, {"messages": [{"role": "user", "content": "word " * CONTEXT}], "max_tokens": 1})
    assert code == 400 and f"the model's context is {CONTEXT} tokens" in reply["error"]["message"]
    code, reply = ask(server, {"messages": HELLO, "max_tokens": 2})
    assert code == 200 and reply["usage"]["completion_tokens"] <= 2  # and the server goes on


def test_generation_stops_when_the_client_leaves(server):
    """A 400-token request whose client hangs up: the model stops within a few tokens, and frees the lock
    for the request behind it (before the fix it generated all 400, about 20 s here, holding the lock)."""
    calls = []
    hook = server.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        data = json.dumps({"messages": HELLO, "max_tokens": 400}).encode()
        with socket.create_connection(server.server_address[:2]) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(data), data))
            deadline = time.time() + 60
            while len(calls) < 3 and time.time() < deadline:  # generating
                time.sleep(0.01)
        assert server.lock.acquire(timeout=10), "generation went on for a client that had gone"
        server.lock.release()
        assert 3 <= len(calls) < 50
    finally:
        hook.remove()
    code, reply = ask(server, {"messages": HELLO, "max_tokens": 1})
    assert code == 200 and reply["usage"]["completion_tokens"] == 1

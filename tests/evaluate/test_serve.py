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


# -- the official `openai` client against the server -----------------------------------------------

@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="unused", max_retries=0)


def test_openai_client_lists_the_model_and_gets_n_seeded_choices(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    first = client.chat.completions.create(model="tiny", messages=HELLO, n=3, temperature=1.0, seed=7,
                                           max_completion_tokens=6)
    again = client.chat.completions.create(model="tiny", messages=HELLO, n=3, temperature=1.0, seed=7,
                                           max_completion_tokens=6)
    other = client.chat.completions.create(model="tiny", messages=HELLO, n=3, temperature=1.0, seed=8,
                                           max_completion_tokens=6)
    texts = [c.message.content for c in first.choices]
    assert len(texts) == 3 and [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]  # the seed decides the samples
    assert texts != [c.message.content for c in other.choices]
    assert all(c.finish_reason in ("stop", "length") for c in first.choices)
    assert 3 <= first.usage.completion_tokens <= 18  # max_completion_tokens bounds each choice


def test_openai_client_streams_chunks_that_add_up_to_the_answer(client):
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 2 and text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_openai_client_gets_logprobs_that_are_the_models(client, server):
    import torch

    reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, temperature=0, logprobs=True,
                                           top_logprobs=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens and all(len(e.top_logprobs) == 3 for e in entries)
    # greedy: each token is the most likely one, and its logprob is the top one's
    assert all(e.logprob == pytest.approx(e.top_logprobs[0].logprob, abs=1e-5) for e in entries)
    assert all(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob for e in entries)
    prompt = server.chat_prompt(HELLO)
    ids = server.tokenizer(reply.choices[0].message.content, add_special_tokens=False)["input_ids"][:1]
    with torch.no_grad():
        logits = server.model(torch.tensor([prompt])).logits[0, -1]
    assert entries[0].logprob == pytest.approx(torch.log_softmax(logits, -1)[ids[0]].item(), abs=1e-4)


def test_openai_client_stop_strings_cut_the_answer(client):
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip(), "the tiny model's answer should have text to stop at"
    cut = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[:text.find(stop)] and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < whole.usage.completion_tokens


def test_openai_client_content_parts_and_the_legacy_completions_route(client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}]
    a = client.chat.completions.create(model="tiny", messages=parts, max_tokens=5, temperature=0)
    b = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content
    legacy = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0, logprobs=2)
    assert legacy.object == "text_completion" and legacy.usage.completion_tokens <= 5
    assert len(legacy.choices[0].logprobs.tokens) == legacy.usage.completion_tokens
    assert all(len(top) == 2 for top in legacy.choices[0].logprobs.top_logprobs)


@pytest.mark.parametrize("kwargs, status, param", [
    ({"model": "gpt-4o"}, 404, "model"),  # not the model served
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, 400, "tools"),
    ({"response_format": {"type": "json_object"}}, 400, "response_format"),
    ({"logit_bias": {"1": 5}}, 400, "logit_bias"),
    ({"presence_penalty": 1.0}, 400, "presence_penalty"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"temperature": -1}, 400, "temperature"),
    ({"n": 100}, 400, "n"),
    ({"top_logprobs": 3}, 400, "top_logprobs"),  # without logprobs: true
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "messages[0].content"),
])
def test_openai_client_gets_an_openai_error_for_what_is_refused(client, kwargs, status, param):
    import openai

    request = {"model": "tiny", "messages": HELLO, "max_tokens": 2, **kwargs}
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**request)
    error = caught.value
    assert error.status_code == status and error.body["param"] == param and error.body["message"]
    assert set(error.body) == {"message", "type", "param", "code"}


def test_temperature_nan_is_refused(server):
    code, reply = ask(server, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}')
    assert code == 400 and reply["error"]["param"] == "temperature"

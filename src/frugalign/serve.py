"""`frugalign serve`: any local causal LM behind a minimal OpenAI-compatible chat-completions endpoint.

For a local judge (ADPO's `--annotator llm-judge`, `eval winscore --judge llm`) without vLLM or a
hosted API: POST /v1/chat/completions (messages, max_tokens, temperature) and GET /v1/models. One
request is generated at a time (the model is not thread-safe); the HTTP server itself is threaded,
so clients queue rather than fail. Replies carry token usage, as the OpenAI API's do. Every bad request
gets a JSON error (400, 411, 413), never a dropped connection; a prompt longer than the model's context
is refused, and generation stops when its client has gone, so the requests behind it do not wait.
"""

from __future__ import annotations

import argparse
import json
import math
import select
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20  # bytes: a judge request is a few kilobytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint (hub id or local path; default: the embedded SmolLM2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--name", default=None, help="model name reported by /v1/models (default: --model)")
    parser.add_argument("--max-tokens", type=int, default=512, help="upper bound on a request's max_tokens")


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, model, tokenizer, name: str, max_tokens: int):
        super().__init__(address, ChatHandler)
        self.model, self.tokenizer, self.name, self.max_tokens = model, tokenizer, name, max_tokens
        self.lock = threading.Lock()
        self.requests = 0

    def complete(self, messages: list[dict], max_tokens: int, temperature: float, client: ClientGone) -> dict | None:
        """The reply to a chat request; None if the client went away meanwhile. BadRequest: a prompt the
        model cannot take."""
        from transformers import StoppingCriteriaList

        from frugalign.generation import generate

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a model without a chat template sees the contents one after the other
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        prompt_ids = tok(text)["input_ids"]
        room = max_tokens
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context is not None:
            if len(prompt_ids) >= context:
                raise BadRequest(f"the prompt is {len(prompt_ids)} tokens; the model's context is {context} tokens")
            room = min(room, context - len(prompt_ids))
        with self.lock:
            self.requests += 1
            number = self.requests
            gens = generate(self.model, tok, [text], 1, min(room, self.max_tokens), temperature, 1.0, 1,
                            seed=number, progress=False, prompt_ids=[prompt_ids],
                            stopping_criteria=StoppingCriteriaList([client]))
        if client.gone():
            return None
        prompt_tokens = len(prompt_ids)
        completion_tokens = len(gens.token_ids[0][0])
        finished = bool(gens.token_ids[0][0]) and gens.token_ids[0][0][-1] == tok.eos_token_id
        return {"id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": gens.texts[0][0]},
                             "finish_reason": "stop" if finished else "length"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


class BadRequest(ValueError):
    """A request the server understood but cannot serve (400, with this message)."""


class ClientGone:
    """Stops generation as soon as the client has closed its connection: nobody would read the answer,
    and the requests queued behind it wait for the model."""

    def __init__(self, connection: socket.socket):
        self.connection = connection

    def gone(self) -> bool:
        if not select.select([self.connection], [], [], 0)[0]:
            return False  # nothing to read: still connected, waiting for the reply
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""  # end of stream: closed
        except OSError:
            return True  # reset

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.gone(), dtype=torch.bool, device=input_ids.device)


def _number(body: dict, key: str, default: float, low: float, high: float | None = None, whole: bool = False) -> float:
    """`body[key]` (`default` if absent or null), checked to be a number (`whole`: an integer) in [low, high]."""
    value = body.get(key)
    if value is None:
        return default
    number = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and not whole)
    if isinstance(value, bool) or not number or value < low or (high is not None and value > high):
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        bounds = f">= {low:g}" if high is None else f"from {low:g} to {high:g}"
        raise BadRequest(f"{key} must be {'a whole number' if whole else 'a number'} {bounds}, got {shown}")
    return value


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer
    timeout = 60  # seconds a connection may stall (a body promised but not sent): then 408 and closed

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # one line per request would drown the console; counts are in /v1/models

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, message: str) -> None:
        self.close_connection = True  # the request's body may be unread: never parse it as the next request
        self.reply(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") != "/v1/models":
            return self.error(404, f"no route {self.path}")
        self.reply(200, {"object": "list", "data": [{"id": self.server.name, "object": "model",
                                                     "requests_served": self.server.requests}]})

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.error(404, f"no route {self.path}")
        length = self.headers.get("Content-Length")
        if length is None:
            return self.error(411, "a Content-Length header is needed (chunked bodies are not accepted)")
        if not length.strip().isdigit():
            return self.error(400, f"Content-Length {length[:40]!r} is not a number of bytes")
        if int(length) > MAX_BODY:
            return self.error(413, f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(int(length)))  # at most MAX_BODY bytes, then the socket's timeout
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            messages = body["messages"]
            if not (isinstance(messages, list) and messages and
                    all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
                raise BadRequest("messages must be a non-empty list of {role, content} objects")
            max_tokens = _number(body, "max_tokens", 256, 1, whole=True)
            temperature = float(_number(body, "temperature", 0.0, 0, 2))
        except TimeoutError:
            return self.error(408, f"the body did not arrive within {self.timeout} s")
        except KeyError as e:
            return self.error(400, f"bad request: no {e} field")
        except (ValueError, TypeError, RecursionError) as e:  # JSON (also too deeply nested), UTF-8, BadRequest
            return self.error(400, f"bad request: {str(e)[:200]}")
        try:
            reply = self.server.complete(messages, max_tokens, temperature, ClientGone(self.connection))
        except BadRequest as e:
            return self.error(400, str(e))
        except Exception as e:  # noqa: BLE001 (a reply, not a dropped connection; the traceback goes to stderr)
            traceback.print_exc()
            return self.error(500, f"the server failed on this request: {type(e).__name__}: {str(e)[:200]}")
        if reply is None:
            self.close_connection = True  # the client has gone
            return
        self.reply(200, reply)


def run(args: argparse.Namespace) -> int:
    import torch  # here, not above: `frugalign serve --help` must not load torch (cli.py)

    from frugalign import models

    tokenizer = models.load_tokenizer(args.model)
    model = models.load_causal_lm(args.model).to("cuda" if torch.cuda.is_available() else "cpu")
    server = ChatServer((args.host, args.port), model.eval(), tokenizer, args.name or args.model or "smollm2-135m-instruct",
                        args.max_tokens)
    host, port = server.server_address[:2]
    print(f"serving {server.name} at http://{host}:{port}/v1 (OpenAI chat completions); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0

"""`frugalign serve`: any local causal LM behind a minimal OpenAI-compatible chat-completions endpoint.

For a local judge (ADPO's `--annotator llm-judge`, `eval winscore --judge llm`) without vLLM or a
hosted API: POST /v1/chat/completions (messages, max_tokens, temperature) and GET /v1/models. One
request is generated at a time (the model is not thread-safe); the HTTP server itself is threaded,
so clients queue rather than fail. Replies carry token usage, as the OpenAI API's do.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
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

    def complete(self, messages: list[dict], max_tokens: int, temperature: float) -> dict:
        from frugalign.generation import generate

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a model without a chat template sees the contents one after the other
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        prompt_ids = tok(text)["input_ids"]
        with self.lock:
            self.requests += 1
            number = self.requests
            gens = generate(self.model, tok, [text], 1, min(max_tokens, self.max_tokens), temperature, 1.0, 1,
                            seed=number, progress=False, prompt_ids=[prompt_ids])
        prompt_tokens = len(prompt_ids)
        completion_tokens = len(gens.token_ids[0][0])
        finished = bool(gens.token_ids[0][0]) and gens.token_ids[0][0][-1] == tok.eos_token_id
        return {"id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": gens.texts[0][0]},
                             "finish_reason": "stop" if finished else "length"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

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
        self.reply(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") != "/v1/models":
            return self.error(404, f"no route {self.path}")
        self.reply(200, {"object": "list", "data": [{"id": self.server.name, "object": "model",
                                                     "requests_served": self.server.requests}]})

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.error(404, f"no route {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.error(413, f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
            messages = body["messages"]
            if not (isinstance(messages, list) and messages and
                    all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)):
                raise ValueError("messages must be a non-empty list of {role, content} objects")
            max_tokens = int(body.get("max_tokens") or 256)
            temperature = float(body.get("temperature") or 0.0)
        except (ValueError, KeyError, TypeError) as e:
            return self.error(400, f"bad request: {e}")
        self.reply(200, self.server.complete(messages, max_tokens, temperature))


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

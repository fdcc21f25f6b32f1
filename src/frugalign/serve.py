"""`frugalign serve`: any local causal LM behind an OpenAI-compatible endpoint, for a local judge (ADPO's
`--annotator llm-judge`, `eval winscore --judge llm`) without vLLM or a hosted API, usable with the
official `openai` client.

    GET  /v1/models              the one model served (and the requests served so far)
    POST /v1/chat/completions    messages (string content or a list of text parts), n, max_tokens or
                                 max_completion_tokens, temperature, top_p, seed, stop, logprobs and
                                 top_logprobs, stream (with stream_options.include_usage)
    POST /v1/completions         the same on a plain-text prompt (no chat template); logprobs: top k

What the server cannot do it refuses, with an OpenAI-style error object (`message`, `type`, `param`,
`code`): tools, response formats, logit biases, penalties, an unknown model name. `stream` sends the
answer as server-sent events once it is generated (one content chunk per choice, not token by token).
Log-probabilities are the model's own (temperature 1, before top-p), from one forward pass over the
prompt and the answer. One request is generated at a time (the model is not thread-safe); the HTTP
server is threaded, so clients queue rather than fail. A prompt longer than the model's context is
refused, and generation stops when its client has gone, so the requests behind it do not wait. Fields
this server neither uses nor refuses (`user`, `metadata`, ...) are ignored, as vLLM's server does.
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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20  # bytes: a judge request is a few kilobytes
MAX_N = 16  # choices per request
MAX_TOP_LOGPROBS = 20  # as OpenAI's chat API
# refused: answering without them would silently answer a different question
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logit_bias", "response_format", "audio",
               "modalities", "prediction", "reasoning_effort", "web_search_options", "suffix", "best_of", "echo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint (hub id or local path; default: the embedded SmolLM2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--name", default=None, help="model name reported by /v1/models (default: --model)")
    parser.add_argument("--max-tokens", type=int, default=512, help="upper bound on a request's max_tokens")


class BadRequest(ValueError):
    """A request the server understood but cannot serve: an OpenAI error object with this message, naming
    the request's field (`param`), with HTTP `status`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.param, self.status, self.code, self.kind = param, status, code, kind


@dataclass
class Sampling:
    """What a request asks of generation, checked (`read_sampling`)."""

    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    top_logprobs: int | None  # None: no log-probabilities
    stream: bool
    include_usage: bool


@dataclass
class Choice:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    logprobs: list[dict] | None  # per token: token, logprob, bytes, top_logprobs


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
        raise BadRequest(f"{key} must be {'a whole number' if whole else 'a number'} {bounds}, got {shown}", key)
    return value


def read_sampling(body: dict, chat: bool, default_max_tokens: int) -> Sampling:
    """The sampling fields of a chat (or legacy completions) request, each checked; unsupported fields refused."""
    for key in UNSUPPORTED:
        if body.get(key) not in (None, [], {}) and not (key == "response_format" and body[key] == {"type": "text"}):
            raise BadRequest(f"{key} is not supported by this server (a local model without tools or constrained "
                             "decoding)", key, code="unsupported_parameter")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, 0.0, -2, 2) != 0:
            raise BadRequest(f"{key} is not supported by this server (only 0)", key, code="unsupported_parameter")
    if "max_completion_tokens" in body and body["max_completion_tokens"] is not None:
        max_tokens = _number(body, "max_completion_tokens", default_max_tokens, 1, whole=True)
    else:
        max_tokens = _number(body, "max_tokens", default_max_tokens, 1, whole=True)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)):
        raise BadRequest("stop must be a non-empty string or a list of up to 4 of them", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"seed must be a whole number, got {json.dumps(seed)[:40]}", "seed")
    if chat:
        wanted = body.get("logprobs")
        if wanted not in (None, True, False):
            raise BadRequest("logprobs must be true or false", "logprobs")
        top = int(_number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, whole=True))
        if body.get("top_logprobs") is not None and not wanted:
            raise BadRequest("top_logprobs needs logprobs: true", "top_logprobs")
        top_logprobs = top if wanted else None
    else:  # the legacy API: logprobs is the number of top tokens (0 to 5), null for none
        top_logprobs = None if body.get("logprobs") is None else int(_number(body, "logprobs", 0, 0, 5, whole=True))
    stream = body.get("stream", False)
    if stream not in (None, True, False):
        raise BadRequest("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", "stream_options")
    return Sampling(n=int(_number(body, "n", 1, 1, MAX_N, whole=True)), max_tokens=int(max_tokens),
                    temperature=float(_number(body, "temperature", 1.0, 0, 2)),
                    top_p=float(_number(body, "top_p", 1.0, 0, 1)), seed=seed, stop=stop or [],
                    top_logprobs=top_logprobs, stream=bool(stream), include_usage=bool(options.get("include_usage")))


def chat_text(messages) -> list[dict]:
    """The messages with each content as one string: a list of text parts is joined; other parts refused."""
    if not (isinstance(messages, list) and messages):
        raise BadRequest("messages must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise BadRequest(f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) are "
                                 "supported by this server", f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str) or not isinstance(m.get("role"), str):
            raise BadRequest("messages must be a non-empty list of {role, content} objects", f"messages[{i}]")
        out.append({"role": m["role"], "content": content})
    return out


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, model, tokenizer, name: str, max_tokens: int):
        super().__init__(address, ChatHandler)
        self.model, self.tokenizer, self.name, self.max_tokens = model, tokenizer, name, max_tokens
        self.lock = threading.Lock()
        self.requests = 0

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a model without a chat template sees the contents one after the other
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return tok(text)["input_ids"]

    def sample(self, prompt_ids: list[int], s: Sampling, client: ClientGone) -> tuple[int, list[Choice] | None]:
        """The request's number and `s.n` answers to the prompt (None if the client went away meanwhile).
        BadRequest: a prompt the model cannot take."""
        from transformers import StoppingCriteriaList

        from frugalign.generation import generate

        room = s.max_tokens
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context is not None:
            if len(prompt_ids) >= context:
                raise BadRequest(f"the prompt is {len(prompt_ids)} tokens; the model's context is {context} tokens",
                                 "messages", code="context_length_exceeded")
            room = min(room, context - len(prompt_ids))
        criteria = [client] + ([StopStrings(self.tokenizer, s.stop, len(prompt_ids))] if s.stop else [])
        with self.lock:
            self.requests += 1
            number = self.requests
            gens = generate(self.model, self.tokenizer, [""], s.n, min(room, self.max_tokens), s.temperature, s.top_p,
                            s.n, seed=number if s.seed is None else s.seed, progress=False, prompt_ids=[prompt_ids],
                            stopping_criteria=StoppingCriteriaList(criteria))
            if client.gone():
                return number, None
            choices = [self._choice(ids, s.stop) for ids in gens.token_ids[0]]
            if s.top_logprobs is not None:
                for choice in choices:
                    choice.logprobs = self._logprobs(prompt_ids, choice.token_ids, s.top_logprobs)
        return number, choices

    def _choice(self, ids: list[int], stop: list[str]) -> Choice:
        tok = self.tokenizer
        eos = tok.eos_token_id
        ids = [t for t in ids if t != tok.pad_token_id or t == eos]  # rows stopped early are padded
        finished = bool(ids) and ids[-1] == eos
        for k in range(1, len(ids) + 1 if stop else 0):  # the shortest prefix whose text holds a stop string ends the answer
            text = tok.decode(ids[:k], skip_special_tokens=True)
            cuts = [text.find(x) for x in stop if x in text]
            if cuts:
                return Choice(ids[:k], text[:min(cuts)], "stop", None)
        return Choice(ids, tok.decode(ids, skip_special_tokens=True), "stop" if finished else "length", None)

    def _logprobs(self, prompt_ids: list[int], ids: list[int], top: int) -> list[dict]:
        """Per answer token: its log-probability under the model and the `top` most likely tokens there."""
        import torch

        if not ids:
            return []
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(torch.tensor([prompt_ids + ids], device=device)).logits[0, len(prompt_ids) - 1:-1]
        logps = torch.log_softmax(logits.float(), dim=-1)
        best = logps.topk(top, dim=-1) if top else None
        out = []
        for i, token in enumerate(ids):
            entry = self._token(token, logps[i, token].item())
            entry["top_logprobs"] = ([self._token(t, v) for t, v in zip(best.indices[i].tolist(), best.values[i].tolist())]
                                     if best is not None else [])
            out.append(entry)
        return out

    def _token(self, token: int, logprob: float) -> dict:
        text = self.tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


class StopStrings:
    """Ends a row's generation once its answer's text holds one of the stop strings (the answer is cut
    before it afterwards, in `ChatServer._choice`)."""

    def __init__(self, tokenizer, stop: list[str], prompt_length: int):
        self.tokenizer, self.stop, self.prompt_length = tokenizer, stop, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool, device=input_ids.device)


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


def usage(prompt_ids: list[int], choices: list[Choice]) -> dict:
    completion = sum(len(c.token_ids) for c in choices)
    return {"prompt_tokens": len(prompt_ids), "completion_tokens": completion,
            "total_tokens": len(prompt_ids) + completion}


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

    def error(self, status: int, message: str, param: str | None = None, code: str | None = None,
              kind: str = "invalid_request_error") -> None:
        self.close_connection = True  # the request's body may be unread: never parse it as the next request
        self.reply(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

    def stream(self, chunks: list[dict]) -> None:
        """Server-sent events, as OpenAI streams them: one `data:` line per chunk, then `data: [DONE]`."""
        self.close_connection = True  # the body's end is the connection's end (no length known up front)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") != "/v1/models":
            return self.error(404, f"no route {self.path}", code="not_found")
        self.reply(200, {"object": "list", "data": [{"id": self.server.name, "object": "model", "created": 0,
                                                     "owned_by": "frugalign",
                                                     "requests_served": self.server.requests}]})

    def read_body(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest("a Content-Length header is needed (chunked bodies are not accepted)", status=411)
        if not length.strip().isdigit():
            raise BadRequest(f"Content-Length {length[:40]!r} is not a number of bytes")
        if int(length) > MAX_BODY:
            raise BadRequest(f"request body over {MAX_BODY} bytes", status=413)
        try:
            body = json.loads(self.rfile.read(int(length)))  # at most MAX_BODY bytes, then the socket's timeout
        except TimeoutError:
            raise BadRequest(f"the body did not arrive within {self.timeout} s", status=408) from None
        except (ValueError, RecursionError) as e:  # JSON (also too deeply nested), UTF-8
            raise BadRequest(f"bad request: {str(e)[:200]}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.server.name:
            raise BadRequest(f"The model `{str(model)[:100]}` does not exist (this server serves `{self.server.name}`)",
                             "model", status=404, code="model_not_found")
        return body

    def do_POST(self):  # noqa: N802
        route = self.path.rstrip("/")
        if route not in ("/v1/chat/completions", "/v1/completions"):
            return self.error(404, f"no route {self.path}", code="not_found")
        chat = route == "/v1/chat/completions"
        try:
            body = self.read_body()
            s = read_sampling(body, chat, 256 if chat else 16)
            if chat:
                if "messages" not in body:
                    raise BadRequest("bad request: no 'messages' field", "messages")
                prompt_ids = self.server.chat_prompt(chat_text(body["messages"]))
            else:
                prompt = body.get("prompt")
                prompt = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
                if not isinstance(prompt, str):
                    raise BadRequest("prompt must be a string (one prompt per request)", "prompt")
                prompt_ids = self.server.tokenizer(prompt)["input_ids"]
            number, choices = self.server.sample(prompt_ids, s, ClientGone(self.connection))
        except BadRequest as e:
            return self.error(e.status, str(e), e.param, e.code)
        except Exception as e:  # noqa: BLE001 (a reply, not a dropped connection; the traceback goes to stderr)
            traceback.print_exc()
            return self.error(500, f"the server failed on this request: {type(e).__name__}: {str(e)[:200]}",
                              kind="server_error")
        if choices is None:
            self.close_connection = True  # the client has gone
            return
        created = int(time.time())
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{number}", "created": created, "model": self.server.name}
        if chat:
            answers = [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
                        "logprobs": None if c.logprobs is None else {"content": c.logprobs}}
                       for i, c in enumerate(choices)]
        else:
            answers = [{"index": i, "text": c.text, "finish_reason": c.finish_reason,
                        "logprobs": None if c.logprobs is None else legacy_logprobs(c.logprobs)}
                       for i, c in enumerate(choices)]
        if not s.stream:
            return self.reply(200, {**head, "object": "chat.completion" if chat else "text_completion",
                                    "choices": answers, "usage": usage(prompt_ids, choices)})
        kind = "chat.completion.chunk" if chat else "text_completion"
        chunks = []
        for answer in answers:
            if chat:
                delta = {"role": "assistant", "content": answer["message"]["content"]}
                chunks.append({**head, "object": kind, "choices": [{"index": answer["index"], "delta": delta,
                                                                    "logprobs": answer["logprobs"],
                                                                    "finish_reason": None}]})
                chunks.append({**head, "object": kind, "choices": [{"index": answer["index"], "delta": {},
                                                                    "logprobs": None,
                                                                    "finish_reason": answer["finish_reason"]}]})
            else:
                chunks.append({**head, "object": kind, "choices": [answer]})
        if s.include_usage:
            chunks.append({**head, "object": kind, "choices": [], "usage": usage(prompt_ids, choices)})
        self.stream(chunks)


def legacy_logprobs(entries: list[dict]) -> dict:
    """Log-probabilities in the legacy completions layout."""
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def run(args: argparse.Namespace) -> int:
    import torch  # here, not above: `frugalign serve --help` must not load torch (cli.py)

    from frugalign import models

    tokenizer = models.load_tokenizer(args.model)
    model = models.load_causal_lm(args.model).to("cuda" if torch.cuda.is_available() else "cpu")
    server = ChatServer((args.host, args.port), model.eval(), tokenizer, args.name or args.model or "smollm2-135m-instruct",
                        args.max_tokens)
    host, port = server.server_address[:2]
    print(f"serving {server.name} at http://{host}:{port}/v1 (OpenAI chat and completions); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0

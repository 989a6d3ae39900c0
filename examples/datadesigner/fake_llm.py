"""A small OpenAI-compatible chat server for the datadesigner example and tests: offline and
deterministic, the same prompt always gets the same answer.

    python fake_llm.py --port-file .fake_llm.port      # binds 127.0.0.1 on a free port

POST /v1/chat/completions answers from the last user message: a JSON object built from the
request's `response_format` schema when it has one (a judge's scores), else a short text.
POST /control changes how it answers (a test's way to fail or stop a build at a point that
does not depend on timing). It tells a row's request from Data Designer's health check (the
prompt "Hello!" it sends before a run), and counts the rows' per model (each stage of the
example asks a model of its own), from the /control request on:
  {"fail": true}           every chat request, health checks too, answers 500 ({"fail": false})
  {"fail_after_rows": N}   each model's next N row requests are answered, every later one 500
  {"hold_after_rows": N}   each model's next N row requests are answered, every later one waits
  ... null                 (for either) back to answering
Its answer is the state, with `requests` (chat requests so far) and `rows` (row requests so
far, per model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATE: dict[str, Any] = {"fail": False, "fail_after_rows": None, "hold_after_rows": None,
                         "requests": 0, "rows": {}}
# Each model's row requests when a limit was set: a limit of N holds (or fails) the requests
# past base + N.
BASE: dict[str, dict[str, int]] = {"fail_after_rows": {}, "hold_after_rows": {}}
HEALTH_CHECK = "Hello!"  # the prompt of Data Designer's health check (ModelRegistry)
LOCK = threading.Lock()
RELEASED = threading.Condition(LOCK)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _from_schema(schema: dict[str, Any], defs: dict[str, Any], seed: str) -> Any:
    if "$ref" in schema:
        return _from_schema(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs, seed)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _from_schema(schema[key][0], defs, seed)
    if "enum" in schema:
        return schema["enum"][int(_digest(seed)[:4], 16) % len(schema["enum"])]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: _from_schema(sub, defs, seed + name)
                for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_from_schema(schema.get("items", {}), defs, seed)]
    if kind in ("integer", "number"):
        return int(_digest(seed)[:4], 16) % 5 + 1
    if kind == "boolean":
        return int(_digest(seed)[:2], 16) % 2 == 0
    return f"because {_digest(seed)[:8]}"


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _schema_in(prompt: str) -> dict[str, Any] | None:
    """The JSON schema a prompt asks the answer to follow (Data Designer's structured output
    and judge columns put it between <response_schema> tags)."""
    match = re.search(r"<response_schema>\s*(\{.*\})\s*</response_schema>", prompt, re.S)
    if match is None:
        return None
    try:
        schema = json.loads(match.group(1))
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


def answer(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    prompt = "\n".join(_text(m.get("content")) for m in messages)
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
    if schema is None:
        schema = _schema_in(prompt)
    if schema is not None:
        value = _from_schema(schema, schema.get("$defs", {}), prompt)
        return "```json\n" + json.dumps(value) + "\n```"
    lines = [line for line in prompt.strip().splitlines() if line.strip()] or [""]
    return f"[{_digest(prompt)[:6]}] {lines[-1].strip()[:80]}"


def is_health_check(body: dict[str, Any]) -> bool:
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return len(users) == 1 and _text(users[0].get("content")).strip() == HEALTH_CHECK


def control(body: dict[str, Any]) -> dict[str, Any]:
    """Apply a /control request: a limit counts from each model's row requests so far."""
    with LOCK:
        for key in BASE:
            if key in body:
                BASE[key] = dict(STATE["rows"])
        STATE.update(body)
        RELEASED.notify_all()
        return json.loads(json.dumps(STATE))


def _past(key: str, model: str, number: int) -> bool:
    limit = STATE[key]
    return limit is not None and number > BASE[key].get(model, 0) + int(limit)


def _admit(body: dict[str, Any]) -> bool:
    """Count a chat request (LOCK held), wait while it is held; whether it must fail."""
    STATE["requests"] += 1
    if is_health_check(body):
        return bool(STATE["fail"])
    model = str(body.get("model"))
    number = STATE["rows"][model] = STATE["rows"].get(model, 0) + 1
    while _past("hold_after_rows", model, number):
        RELEASED.wait()
    return bool(STATE["fail"]) or _past("fail_after_rows", model, number)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _reply(self, code: int, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._reply(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.endswith("/control"):
            self._reply(200, control(body))
            return
        with LOCK:
            failing = _admit(body)
            if os.environ.get("FAKE_LLM_LOG"):  # every request, for debugging
                with open(os.environ["FAKE_LLM_LOG"], "a") as fh:
                    fh.write(json.dumps(body) + "\n")
        if failing:
            self._reply(500, {"error": {"message": "fake_llm: failing on purpose",
                                        "type": "server_error"}})
            return
        text = answer(body)
        self._reply(200, {
            "id": "chatcmpl-" + _digest(text)[:12], "object": "chat.completion", "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    tmp = f"{args.port_file}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A small OpenAI-compatible chat server for the datadesigner example and tests: offline and
deterministic, the same prompt always gets the same answer.

    python fake_llm.py --port-file .fake_llm.port      # binds 127.0.0.1 on a free port

POST /v1/chat/completions answers from the last user message: a JSON object built from the
request's `response_format` schema when it has one (a judge's scores), else a short text.
POST /control with {"fail": true} makes every chat request answer 500 until {"fail": false};
{"hold_after": N} holds every chat request after the N-th until {"hold_after": null} (a test's
point to kill a build at). Its answer is the state, with `requests`: chat requests so far.
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

STATE: dict[str, Any] = {"fail": False, "hold_after": None, "requests": 0}
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
            with LOCK:
                STATE.update(body)
                RELEASED.notify_all()
                state = dict(STATE)
            self._reply(200, state)
            return
        with LOCK:
            STATE["requests"] += 1
            number = STATE["requests"]
            while STATE["hold_after"] is not None and number > STATE["hold_after"]:
                RELEASED.wait()
            failing = STATE["fail"]
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

"""A loopback OpenAI chat-completions server for the judge tests.

A test double at the one boundary that cannot exist here: the real judge (GPT-4 or a served model) is a
remote HTTP API. This server listens on 127.0.0.1 only, speaks the same `/v1/chat/completions` JSON the
`openai` client sends and reads, and answers from a script the test sets: a rating, a verdict with no
rating, or an HTTP error status (`refusing` makes one that refuses some prompts with HTTP 400, the way a
content filter or a context-length limit refuses the same prompt every time).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JudgeServer:
    """`reply(request_number, user_prompt)` -> (HTTP status, verdict text)."""

    def __init__(self, reply: Callable[[int, str], tuple[int, str]]) -> None:
        self.reply = reply
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    number = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                status, text = server.reply(number, user)
                if status != 200:
                    kind = "invalid_request_error" if status < 500 else "server_error"
                    payload = {"error": {"message": f"scripted failure {status}", "type": kind,
                                         "code": "content_filter" if status == 400 else None}}
                else:
                    payload = {"id": f"chatcmpl-{number}", "object": "chat.completion", "created": 0,
                               "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": text}}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refusing(marker: str, reply: Callable[[int, str], tuple[int, str]]) -> Callable[[int, str], tuple[int, str]]:
    """A script that refuses (HTTP 400, every time) each prompt holding MARKER and answers the rest with REPLY."""

    def script(number: int, user: str) -> tuple[int, str]:
        return (400, "") if marker in user else reply(number, user)

    return script

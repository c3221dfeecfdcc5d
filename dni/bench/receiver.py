"""The one stand-in the tests and `dni bench postbacks` allow for ad platforms and CRMs: a real
local HTTP server that records every request it gets (and when) and answers as told (a status,
a body, a delay), so what dni sends, and what it makes of an answer, is checked on real HTTP."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from requests import PreparedRequest, Session
from requests.adapters import HTTPAdapter


@dataclass(frozen=True)
class Received:
    """One request as the receiver got it; header names lower-cased."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Answer:
    prefix: str
    status: int
    body: bytes
    delay: float
    headers: dict[str, str]
    times: int | None  # None: forever
    order: int = 0


class Receiver:
    """An HTTP server on 127.0.0.1 in a daemon thread, from its creation to `close` (or the end
    of its `with` block). Each request is recorded in full before it is answered, by the latest
    `answer` rule whose path prefix matches (a rule with `times` left used up before any
    forever rule), else with 200 `{}`."""

    def __init__(self) -> None:
        self._received: list[Received] = []
        self._answers: list[_Answer] = []
        self._order = itertools.count(1)
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.02,), daemon=True)  # quick close
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop at once: answers still waiting out a delay are cut short."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(
        self,
        path_prefix: str,
        status: int = 200,
        body: bytes | str | Mapping[str, Any] | list[Any] = b"{}",
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests whose path starts with `path_prefix` so (`times` of them, or all);
        a mapping or list body is sent as JSON."""
        if isinstance(body, Mapping | list):
            body = json.dumps(body, ensure_ascii=False)
        raw = body.encode() if isinstance(body, str) else body
        rule = _Answer(path_prefix, status, raw, delay, dict(headers or {}), times)
        with self._changed:
            rule.order = next(self._order)
            self._answers.append(rule)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The requests received once there are `count` of them (AssertionError after
        `timeout` seconds)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._received) >= count, timeout):
                raise AssertionError(f"{len(self._received)} requests came, not {count}")
            return list(self._received)

    def clear(self) -> None:
        """Forget the requests received and the answers set: as new."""
        with self._changed:
            self._received.clear()
            self._answers.clear()

    def session(self, *origins: str) -> Session:
        """A requests session that sends what it would send to these origins
        (`https://host`) here instead, path and query kept: a platform's own address, tested."""
        http = Session()
        for origin in origins:
            http.mount(origin.rstrip("/") + "/", _Rerouted(self.url))
        return http

    def _record(self, request: Received) -> _Answer:
        with self._changed:
            self._received.append(request)
            self._changed.notify_all()
            matching = [
                a
                for a in self._answers
                if request.path.startswith(a.prefix) and (a.times is None or a.times > 0)
            ]
            counted = [a for a in matching if a.times is not None]
            rule = max(counted or matching, key=lambda a: a.order, default=None)
            if rule is None:
                return _Answer("", 200, b"{}", 0.0, {}, None)
            if rule.times is not None:
                rule.times -= 1
            return rule


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that hung up (a killed worker, a timeout) is what tests do."""


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a client that never sends its request cannot hold the server

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            headers = {name.lower(): value for name, value in self.headers.items()}
            query = parse_qs(parts.query, keep_blank_values=True)
            body = self._body(headers)
            request = Received(self.command, parts.path, query, headers, body, time.monotonic())
            rule = receiver._record(request)
            if rule.delay:
                receiver._closing.wait(rule.delay)  # cut short by close()
            self.send_response(rule.status)
            sent = {"Content-Type": "application/json", **rule.headers}
            for name, value in sent.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(rule.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(rule.body)

        def _body(self, headers: dict[str, str]) -> bytes:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                return b"".join(_chunks(self.rfile))
            return self.rfile.read(int(headers.get("content-length") or 0))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _chunks(stream: Any) -> Iterator[bytes]:
    while size := int(stream.readline().split(b";")[0].strip() or b"0", 16):
        yield stream.read(size)
        stream.readline()
    while stream.readline().strip():  # trailers
        pass


class _Rerouted(HTTPAdapter):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url or "")
        request.url = self.target + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().send(request, *args, **kwargs)

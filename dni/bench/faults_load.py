"""The load of `dni bench faults`: simulated visitors who start a visit, heartbeat, keep the
number they were shown and sometimes call it (a CDR push signed like dni/providers/cdr.py
expects), plus a pool-drain attacker. Every answer is recorded, so the benchmark can check
afterwards what was acknowledged against what reached SQL.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dni.bench.visits import UA
from dni.providers.cdr import sign

SITE = "faults"
CDR_SECRET = "faults-bench-cdr-secret"
BEAT = 0.5  # seconds between a visitor's heartbeats: the benchmark compresses time
CALL_SHARE = 0.3  # visitors who phone the number they were shown
TIMEOUT = 5.0

Slot = tuple[str, str]  # a tracking number and its extension ("" for none)


@dataclass(frozen=True)
class Reply:
    kind: str  # visit, heartbeat, cdr or attack
    at: float  # time.monotonic() when sent
    ms: float
    status: int  # 0: no HTTP answer (refused, reset, timed out)


@dataclass
class Visitor:
    id: str
    ip: str
    leaves: float
    due: float = 0.0
    visit: str | None = None
    calls_at: float | None = None
    slot: Slot | None = None
    answered: bool = False  # its first visit was answered


@dataclass
class Record:
    """What the servers answered, shared by every load thread."""

    replies: list[Reply] = field(default_factory=list)
    # (visit, number, extension) of every answer that gave a visitor a tracking slot.
    leases: set[tuple[str, str, str]] = field(default_factory=set)
    calls: set[str] = field(default_factory=set)  # call ids a CDR push acknowledged
    # Each real visitor's 200 answers about its visit: (time sent, slot shown).
    seen: dict[str, list[tuple[float, Slot | None]]] = field(default_factory=dict)
    first_tracked: list[bool] = field(default_factory=list)  # per real visitor's first visit
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, reply: Reply) -> None:
        with self.lock:
            self.replies.append(reply)


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One POST on a fresh connection: status 0 when nothing answered, JSON of a 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException):
        return 0, {}
    finally:
        connection.close()
    if response.status != 200:
        return response.status, {}
    try:
        answer = json.loads(data)
    except ValueError:
        return response.status, {}
    return response.status, answer if isinstance(answer, dict) else {}


def slot_of(answer: dict[str, Any]) -> Slot | None:
    """The tracking slot a visit answer shows, None for the shop's own number or none."""
    for number in answer.get("numbers") or []:
        if number.get("extension") or number.get("number") != number.get("target"):
            return str(number["number"]), str(number.get("extension") or "")
    return None


class Load:
    """Threads of visitors against one server until `stop()`; `lanes` threads each keep
    `per_lane` visitors on the site, each staying up to `stay` seconds."""

    def __init__(self, port: int, lanes: int, per_lane: int, stay: float, seed: int) -> None:
        self.port = port
        self.per_lane = per_lane
        self.stay = stay
        self.record = Record()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._lane, args=(random.Random(seed + i),), daemon=True)
            for i in range(lanes)
        ]

    def start(self, attackers: int = 0) -> None:
        for i in range(attackers):
            thread = threading.Thread(target=self._attack, args=(i,), daemon=True)
            self.threads.append(thread)
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT * 2)

    def _send(
        self, kind: str, path: str, body: dict[str, Any], ip: str
    ) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "text/plain", "User-Agent": UA, "X-Forwarded-For": ip}
        if kind == "cdr":
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-DNI-Timestamp": stamp,
                "X-DNI-Signature": sign(CDR_SECRET, stamp, raw),
            }
        began = time.monotonic()
        status, answer = post(self.port, path, raw, headers)
        self.record.add(Reply(kind, began, (time.monotonic() - began) * 1000, status))
        return status, answer

    def _lane(self, rng: random.Random) -> None:
        active: list[Visitor] = []
        while not self.stopping.is_set():
            now = time.monotonic()
            active = [v for v in active if v.leaves > now]
            while len(active) < self.per_lane:
                active.append(self._arrive(rng, now))
            visitor = min(active, key=lambda v: v.due)
            if visitor.due > now:
                self.stopping.wait(visitor.due - now)
                continue
            self._step(visitor, rng)
            visitor.due = time.monotonic() + BEAT

    def _arrive(self, rng: random.Random, now: float) -> Visitor:
        visitor = Visitor(
            id=f"fv{rng.getrandbits(64):016x}",
            ip=".".join(str(rng.randint(1, 254)) for _ in range(4)),
            leaves=now + self.stay * rng.uniform(0.3, 1.0),
            due=now,
        )
        if rng.random() < CALL_SHARE:
            visitor.calls_at = now + (visitor.leaves - now) * rng.uniform(0.2, 0.9)
        with self.record.lock:
            self.record.seen[visitor.id] = []
        return visitor

    def _step(self, visitor: Visitor, rng: random.Random) -> None:
        now = time.monotonic()
        if visitor.visit is None:
            self._visit(visitor)
        elif visitor.calls_at is not None and now >= visitor.calls_at and visitor.slot:
            self._call(visitor, rng)
        else:
            path = f"/v1/visits/{visitor.visit}/heartbeat"
            status, answer = self._send("heartbeat", path, {}, visitor.ip)
            if status == 404:  # the visit ended: the next step starts again, as the snippet does
                visitor.visit = None
            elif status == 200:
                self._seen(visitor, now, answer)

    def _visit(self, visitor: Visitor) -> None:
        # The first page carries campaign parameters; a later one continues the visit.
        query = "?utm_source=baidu&utm_medium=cpc&utm_term=faults" if not visitor.answered else ""
        body = {"site": SITE, "visitor": visitor.id, "url": f"http://127.0.0.1/p{query}"}
        began = time.monotonic()
        status, answer = self._send("visit", "/v1/visits", body, visitor.ip)
        if status != 200:
            return
        if not visitor.answered:
            visitor.answered = True
            with self.record.lock:
                self.record.first_tracked.append(slot_of(answer) is not None)
        self._seen(visitor, began, answer)

    def _seen(self, visitor: Visitor, began: float, answer: dict[str, Any]) -> None:
        visitor.visit = answer.get("visit") or visitor.visit
        visitor.slot = slot_of(answer)
        with self.record.lock:
            self.record.seen[visitor.id].append((began, visitor.slot))
            if visitor.slot is not None and answer.get("visit"):
                self.record.leases.add((str(answer["visit"]), *visitor.slot))

    def _call(self, visitor: Visitor, rng: random.Random) -> None:
        assert visitor.slot is not None
        number, extension = visitor.slot
        call_id = f"call-{visitor.id}"
        record = {
            "call_id": call_id,
            "from": f"138{rng.randint(0, 99_999_999):08d}",
            "to": number,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration": rng.randint(5, 300),
            "status": "completed",
            **({"extension": extension} if extension else {}),
        }
        status, answer = self._send("cdr", f"/v1/calls/cdr/{SITE}", record, visitor.ip)
        stored = [c.get("call_id") for c in answer.get("calls", [])]
        if status == 200 and call_id in stored:
            visitor.calls_at = None  # acknowledged; a 503 is pushed again, as senders do
            with self.record.lock:
                self.record.calls.add(call_id)

    def _attack(self, index: int) -> None:
        """New visits that never heartbeat, each from another address: across many /24s on
        even threads, within one /24 on odd ones (behind one trusted proxy)."""
        rng = random.Random(10_000 + index)
        n = 0
        while not self.stopping.is_set():
            n += 1
            if index % 2 == 0:
                ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            else:
                ip = f"198.51.100.{n % 254 + 1}"
            url = f"http://127.0.0.1/p?utm_source=baidu&utm_medium=cpc&utm_term=a{n}"
            body = {"site": SITE, "visitor": f"atk{index}x{n:09d}", "url": url}
            self._send("attack", "/v1/visits", body, ip)

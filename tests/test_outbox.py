"""The outbox (DESIGN §10): conversions queued with what causes them, gated, retracted, and
delivered by the worker with retries and a dead-letter list, against a local receiver that
records exactly what it was sent (the only stand-in: no ad platform is called)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni import outbox
from dni.bench.receiver import Receiver
from dni.models import Call, Postback, PostbackAttempt
from dni.outcomes import OutcomeInput, set_outcome
from dni.postbacks import Conversion
from dni.providers.cdr import verify
from dni.visits import Assigned, RateLimit
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import call_at, load_toml, shop_toml, start_visit

BAIDU = "https://shop.example.cn/landing?bd_vid=nHRvPWb1nHfdnWbv&kw=%E9%B2%9C%E8%8A%B1"
HOOK_SECRET = "crm-secret-0123456789abcdef"


class Later:
    """The worker's clock: the real time (rows are queued at it) plus what a test adds."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


PAID = [f"400-100-{n:04d}" for n in range(1, 61)]


def postback_site(rt: Runtime, receiver: Receiver, tables: str) -> None:
    rt.visits.rate_limit = RateLimit(10**9, 60)
    receiver.answer("/ocpcapi", body=BAIDU_OK)
    load_toml(rt.stores.sessions, shop_toml(PAID) + tables.format(url=receiver.url))
    rt.sites.clear()


BAIDU_TABLE = """
[[site.postback]]
name = "baidu"
platform = "baidu_ocpc"
url = "{url}"
token = "baidu-token-0123456789"
on = ["qualified", "sale"]
new_type = {{ qualified = 30, sale = 1000 }}
"""

HOOK_TABLE = f"""
[[site.postback]]
name = "crm"
platform = "webhook"
url = "{{url}}/crm/hook"
secret = "{HOOK_SECRET}"
"""
CREATED_ONLY = HOOK_TABLE + 'on = ["call.created"]\n'
BAIDU_OK = {"header": {"desc": "success", "status": 0}}


def rows(sessions: sessionmaker[Session]) -> list[Postback]:
    with sessions() as session:
        return list(session.scalars(select(Postback).order_by(Postback.id)))


def baidu_call(rt: Runtime, clock: Clock, n: int = 1, duration: int = 90, url: str = BAIDU) -> Call:
    """A visit from `url`, then a call from it to the number it was shown, attributed."""
    (shown,) = start_visit(rt, f"visitor-{n}", url).numbers
    clock.advance(30)
    return call_to(rt, shown, n, duration)


def call_to(rt: Runtime, shown: Assigned, n: int = 1, duration: int = 90) -> Call:
    caller = f"+861381234{n:04d}"
    number, extension = shown.number_e164, shown.extension or ""
    return call_at(rt, rt.now(), number, caller, n, duration, extension)


def test_a_qualified_call_from_a_baidu_click_is_queued_with_it_and_sent_once(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    call = baidu_call(rt, clock)
    assert call.outcome == "qualified"
    (row,) = rows(rt.stores.sessions)  # queued in the attribution's own transaction
    assert (row.state, row.event, row.action, row.key) == (
        "pending",
        "qualified",
        "convert",
        f"dni-{call.id}-qualified",
    )
    assert outbox.deliver(rt.stores.sessions) == 1
    (got,) = receiver.requests
    assert got.path == "/ocpcapi/api/uploadConvertData"
    body = got.json()
    assert body["token"] == "baidu-token-0123456789"
    (conversion,) = body["conversionTypes"]
    assert conversion["logidUrl"] == BAIDU and conversion["newType"] == 30
    (row,) = rows(rt.stores.sessions)
    assert (row.state, row.attempts) == ("delivered", 1)
    assert outbox.deliver(rt.stores.sessions) == 0  # nothing twice
    with rt.stores.sessions() as session:
        (attempt,) = session.scalars(select(PostbackAttempt)).all()
    assert attempt.status == 200 and attempt.outcome == "delivered"
    assert "baidu-token-0123456789" not in attempt.request  # secrets never kept
    assert "uploadConvertData" in attempt.request


def test_planning_again_queues_nothing_twice(rt: Runtime, clock: Clock, receiver: Receiver) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    call = baidu_call(rt, clock)
    with rt.stores.sessions.begin() as session:
        assert outbox.plan(session, [call.id], datetime.now(UTC)) == 0
    assert len(rows(rt.stores.sessions)) == 1


def test_a_sale_sends_its_own_conversion_with_its_value(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    call = baidu_call(rt, clock)
    with rt.stores.sessions.begin() as session:
        stored = session.get(Call, call.id)
        assert stored is not None
        sale = OutcomeInput("sale", revenue=1_280_00, currency="CNY", order_id="A-1")
        set_outcome(session, stored, sale, "api", "key test", rt.now())
    events = sorted(r.event for r in rows(rt.stores.sessions))
    assert events == ["qualified", "sale"]
    outbox.deliver(rt.stores.sessions)
    sent = {c["newType"]: c for r in receiver.requests for c in r.json()["conversionTypes"]}
    assert set(sent) == {30, 1000}
    assert sent[1000]["convertValue"] == 128000  # fen


@pytest.mark.parametrize(
    ("tables", "why"),
    [
        (BAIDU_TABLE.replace('on = ["qualified", "sale"]', 'on = ["sale"]'), "not a sale"),
        (BAIDU_TABLE + "min_confidence = 1.0\n", "confidence below the destination's"),
    ],
)
def test_gating_sends_only_what_the_destination_asks_for(
    rt: Runtime, clock: Clock, receiver: Receiver, tables: str, why: str
) -> None:
    postback_site(rt, receiver, tables)
    baidu_call(rt, clock)
    assert rows(rt.stores.sessions) == [], why


GOOGLE_TABLE = """
[[site.postback]]
name = "google"
platform = "google_ads"
url = "{url}"
customer_id = "1234567890"
developer_token = "dev-token-0123456789"
client_id = "client.apps.googleusercontent.com"
client_secret = "client-secret-0123456789"
refresh_token = "refresh-token-0123456789"
conversion_action = 987654321
on = ["qualified"]
"""


def test_no_click_no_conversion_and_an_assist_credits_the_earlier_click(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, GOOGLE_TABLE)
    google = "https://shop.example.cn/?gclid=Cj0KCQiA-test-click"
    start_visit(rt, "v", google)  # a Google click first …
    clock.advance(3 * 3600)
    (shown,) = start_visit(rt, "v", BAIDU).numbers
    clock.advance(30)
    call = call_to(rt, shown)  # … the call credits the Baidu visit
    assert call.source == "baidu" and call.attribution_method not in outbox.NOT_CREDITED
    assert rows(rt.stores.sessions) == []  # no gclid on it: nothing for Google
    postback_site(rt, receiver, GOOGLE_TABLE + "assist = true\n")
    clock.advance(60)
    call_to(rt, shown, n=2)
    (row,) = rows(rt.stores.sessions)
    conversion = row.conversion
    assert conversion["assist"] is True and conversion["landing_url"] == google
    assert conversion["click_ids"] == {"gclid": "Cj0KCQiA-test-click"}


def test_a_settings_change_takes_nothing_back(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    call = baidu_call(rt, clock)
    outbox.deliver(rt.stores.sessions)
    postback_site(rt, receiver, BAIDU_TABLE + "min_confidence = 1.0\n")
    with rt.stores.sessions.begin() as session:  # the call changes again (a longer duration)
        stored = session.get(Call, call.id)
        assert stored is not None
        stored.duration_seconds += 10
    assert [(r.action, r.state) for r in rows(rt.stores.sessions)] == [("convert", "delivered")]


def test_a_blocked_caller_and_spam_send_nothing(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    call = baidu_call(rt, clock)
    with rt.stores.sessions.begin() as session:
        stored = session.get(Call, call.id)
        assert stored is not None
        set_outcome(session, stored, OutcomeInput("spam"), "dashboard", "agent", rt.now())
    (row,) = rows(rt.stores.sessions)
    assert row.state == "cancelled"  # it had not left: nothing to take back
    assert outbox.deliver(rt.stores.sessions) == 0
    assert receiver.requests == []


def test_a_call_turned_spam_after_its_conversion_left_is_retracted(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    call = baidu_call(rt, clock)
    outbox.deliver(rt.stores.sessions)
    with rt.stores.sessions.begin() as session:
        stored = session.get(Call, call.id)
        assert stored is not None
        set_outcome(session, stored, OutcomeInput("invalid"), "dashboard", "agent", rt.now())
    later = Later()
    later.advance(outbox.CLAIM.total_seconds() + 1)
    assert outbox.deliver(rt.stores.sessions, later) == 1
    retraction = receiver.requests[-1]
    assert retraction.path == "/ocpcapi/api/uploadInvalidConvertData"
    (invalid,) = retraction.json()["invalidConversionTypes"]
    assert invalid["logidUrl"] == BAIDU
    states = [(r.action, r.state, r.key) for r in rows(rt.stores.sessions)]
    key = f"dni-{call.id}-qualified"
    assert states == [("convert", "delivered", key), ("retract", "delivered", f"retract-{key}")]


def test_crm_webhooks_are_signed_and_each_event_sent_once(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, HOOK_TABLE)
    call = baidu_call(rt, clock)
    outbox.deliver(rt.stores.sessions)
    got = {r.json()["type"]: r for r in receiver.requests}
    assert set(got) == {"call.created", "call.attributed", "call.outcome"}
    for request in got.values():
        assert request.path == "/crm/hook"
        verify(
            HOOK_SECRET,
            request.headers["x-dni-timestamp"],
            request.headers["x-dni-signature"],
            request.body,
            datetime.now(UTC),
        )
    outcome = got["call.outcome"].json()
    assert outcome["id"].startswith(f"evt-{call.id}-outcome-")
    assert outcome["data"]["call_id"] == call.provider_call_id
    assert outcome["data"]["outcome"]["status"] == "qualified"
    assert outcome["data"]["visit"]["landing_page"] == BAIDU
    # The same outcome again is no new event; a new one is.
    with rt.stores.sessions.begin() as session:
        stored = session.get(Call, call.id)
        assert stored is not None
        set_outcome(session, stored, OutcomeInput("sale", 100, "CNY"), "api", "k", rt.now())
    outbox.deliver(rt.stores.sessions)
    types = [r.json()["type"] for r in receiver.requests]
    assert types.count("call.outcome") == 2 and types.count("call.created") == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        (503, ""),
        (429, '{"error": "slow down"}'),
    ],
)
def test_failures_are_retried_with_backoff_then_delivered(
    rt: Runtime, clock: Clock, receiver: Receiver, status: int, body: str
) -> None:
    postback_site(rt, receiver, CREATED_ONLY)
    baidu_call(rt, clock)
    receiver.answer("/crm", status=status, body=body, times=2)
    later = Later()
    assert outbox.deliver(rt.stores.sessions, later) == 1
    assert outbox.deliver(rt.stores.sessions, later) == 0  # not due yet
    for _ in range(2):
        later.advance(outbox.BACKOFF_CAP * 1.5)
        outbox.deliver(rt.stores.sessions, later)
    (row,) = rows(rt.stores.sessions)
    assert (row.state, row.attempts) == ("delivered", 3)
    assert len(receiver.requests) == 3
    assert len({r.json()["id"] for r in receiver.requests}) == 1  # one idempotency key
    with rt.stores.sessions() as session:
        attempts = session.scalars(select(PostbackAttempt).order_by(PostbackAttempt.id)).all()
    assert [a.status for a in attempts] == [status, status, 200]
    assert attempts[0].outcome == "retry" and attempts[0].response == body[:2000]


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    for attempts in range(1, 20):
        expected = min(outbox.BACKOFF_CAP, outbox.BACKOFF_BASE * 2 ** (attempts - 1))
        delays = [outbox.backoff(attempts) for _ in range(50)]
        assert all(expected * 0.5 <= d <= expected * 1.5 for d in delays)
        assert len(set(delays)) > 1  # spread, not in lockstep
    assert outbox.backoff(1, retry_after=6 * 3600) == 6 * 3600


def test_a_permanent_error_goes_to_the_dead_letter_list_and_can_be_retried(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, CREATED_ONLY)
    baidu_call(rt, clock)
    receiver.answer("/crm", status=400, body='{"error":"unknown field"}', times=1)
    outbox.deliver(rt.stores.sessions)
    (row,) = rows(rt.stores.sessions)
    assert (row.state, row.attempts) == ("dead", 1)
    assert "HTTP 400" in row.last_error and "unknown field" in row.last_error
    with rt.stores.sessions.begin() as session:
        assert outbox.retry(session, row.id, datetime.now(UTC))
        assert not outbox.retry(session, row.id, datetime.now(UTC))  # pending now, not dead
    outbox.deliver(rt.stores.sessions)
    assert [r.state for r in rows(rt.stores.sessions)] == ["delivered"]


def test_n_failures_make_a_dead_letter(rt: Runtime, clock: Clock, receiver: Receiver) -> None:
    table = CREATED_ONLY + "max_attempts = 3\n"
    postback_site(rt, receiver, table)
    baidu_call(rt, clock)
    receiver.answer("/crm", status=500)
    later = Later()
    for _ in range(5):
        outbox.deliver(rt.stores.sessions, later)
        later.advance(outbox.BACKOFF_CAP * 1.5)
    (row,) = rows(rt.stores.sessions)
    assert (row.state, row.attempts) == ("dead", 3)
    assert len(receiver.requests) == 3


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"status": 302, "headers": {"Location": "http://evil.example/"}}, "dead"),
        ({"status": 200, "body": "x" * (5 * 1024 * 1024)}, "delivered"),
        ({"status": 500, "body": "\x00\xff garbage" * 1000}, "pending"),
        ({"status": 200, "body": "<html>maintenance</html>"}, "delivered"),
    ],
)
def test_hostile_answers_never_crash_the_worker(
    rt: Runtime, clock: Clock, receiver: Receiver, answer: dict[str, Any], expected: str
) -> None:
    postback_site(rt, receiver, CREATED_ONLY)
    baidu_call(rt, clock)
    receiver.answer("/crm", **answer)
    outbox.deliver(rt.stores.sessions)
    (row,) = rows(rt.stores.sessions)
    assert row.state == expected
    assert len(receiver.requests) == 1  # a redirect is not followed
    with rt.stores.sessions() as session:
        (attempt,) = session.scalars(select(PostbackAttempt)).all()
    assert len(attempt.response) <= outbox.KEPT_ANSWER


def test_a_slow_receiver_times_out_and_is_tried_again(
    rt: Runtime, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "TIMEOUT", (1.0, 0.5))
    postback_site(rt, receiver, CREATED_ONLY)
    baidu_call(rt, clock)
    receiver.answer("/crm", delay=3.0, times=1)
    outbox.deliver(rt.stores.sessions)
    (row,) = rows(rt.stores.sessions)
    assert row.state == "pending" and "Timeout" in row.last_error


def test_a_missing_secret_is_a_dead_letter_naming_it(
    rt: Runtime, clock: Clock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DNI_TEST_BAIDU_TOKEN", raising=False)
    table = BAIDU_TABLE.replace('"baidu-token-0123456789"', '"env:DNI_TEST_BAIDU_TOKEN"')
    postback_site(rt, receiver, table)
    baidu_call(rt, clock)
    outbox.deliver(rt.stores.sessions)
    (row,) = rows(rt.stores.sessions)
    assert row.state == "dead" and "DNI_TEST_BAIDU_TOKEN" in row.last_error
    assert receiver.requests == []


def test_the_outbox_needs_no_redis(rt: Runtime, clock: Clock, receiver: Receiver) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    baidu_call(rt, clock)
    rt.stores.redis.flushall()  # Redis emptied after the call was queued: nothing is lost
    assert outbox.deliver(rt.stores.sessions) == 1
    assert [r.state for r in rows(rt.stores.sessions)] == ["delivered"]


def test_re_attribution_to_another_visit_retracts_the_old_click(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    call = baidu_call(rt, clock)
    outbox.deliver(rt.stores.sessions)
    other = BAIDU.replace("nHRvPWb1nHfdnWbv", "otherClick123456")
    with rt.stores.sessions() as session:
        first = session.get(Call, call.id)
        assert first is not None and first.visit_id is not None
    start_visit(rt, "visitor-9", other)
    visit_id = _latest_visit(rt.stores.sessions, "visitor-9", rt)
    with rt.stores.sessions.begin() as session:  # as a re-attribution writes it
        from dni.db import update_calls

        update_calls(session, [{"id": call.id, "visit_id": visit_id}])
    kinds = [(r.action, r.key, r.visit_id) for r in rows(rt.stores.sessions)]
    assert kinds[1] == ("retract", f"retract-dni-{call.id}-qualified", first.visit_id)
    assert kinds[2] == ("convert", f"dni-{call.id}-qualified-2", visit_id)


def _latest_visit(sessions: sessionmaker[Session], visitor: str, rt: Runtime) -> str:
    from dni.history import flush_history
    from dni.models import Visit

    flush_history(rt.stores, rt.now())
    with sessions() as session:
        found = session.scalars(select(Visit.id).where(Visit.visitor_id == visitor)).one()
    return str(found)


def test_the_conversion_row_is_json_a_platform_reads_back(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    postback_site(rt, receiver, BAIDU_TABLE)
    baidu_call(rt, clock)
    (row,) = rows(rt.stores.sessions)
    json.dumps(row.conversion)  # plain JSON in the row
    conversion = Conversion.from_json(row.conversion)
    assert conversion.click_ids["bd_vid"] == "nHRvPWb1nHfdnWbv"
    assert conversion.currency == "CNY" and conversion.timezone == "Asia/Shanghai"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    monkeypatch.setenv("DNI_REDIS_URL", redis_url)


@pytest.mark.usefixtures("cli_env")
def test_postbacks_list_retry_and_the_dead_letter_list(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    from click.testing import CliRunner

    from dni.cli import main

    postback_site(rt, receiver, CREATED_ONLY)
    call = baidu_call(rt, clock)
    receiver.answer("/crm", status=410, body="gone", times=1)
    outbox.deliver(rt.stores.sessions)
    (row,) = rows(rt.stores.sessions)
    listed = CliRunner().invoke(main, ["postbacks", "list", "--dead"])
    assert listed.exit_code == 0, listed.output
    assert f"{row.id}  dead" in listed.output and "HTTP 410: gone" in listed.output
    assert f"call {call.provider_call_id}" in listed.output and "1 postback(s)" in listed.output
    retried = CliRunner().invoke(main, ["postbacks", "retry", str(row.id)])
    assert retried.exit_code == 0 and "queued again" in retried.output
    again = CliRunner().invoke(main, ["postbacks", "retry", str(row.id)])
    assert again.exit_code == 1 and "no dead or cancelled postback" in again.output
    outbox.deliver(rt.stores.sessions)
    listed = CliRunner().invoke(main, ["postbacks", "list", "--site", "shop"])
    assert f"{row.id}  delivered" in listed.output
    assert CliRunner().invoke(main, ["postbacks", "list", "--dead"]).output == "0 postback(s)\n"


@pytest.mark.usefixtures("cli_env")
def test_postbacks_test_sends_in_test_mode_or_delivers_the_queued_conversion(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    from click.testing import CliRunner

    from dni.cli import main

    postback_site(rt, receiver, BAIDU_TABLE + HOOK_TABLE)
    baidu_call(rt, clock)
    test = ["postbacks", "test", "--site", "shop", "--destination"]
    sent = CliRunner().invoke(main, [*test, "baidu"])  # no test mode: the queued one, now
    assert sent.exit_code == 0, sent.output
    (queued,) = [r for r in rows(rt.stores.sessions) if r.destination == "baidu"]
    assert f"baidu_ocpc has no test mode: postback {queued.id}" in sent.output
    assert "POST " in sent.output and "uploadConvertData" in sent.output
    assert "baidu-token-0123456789" not in sent.output  # the token hidden
    assert "-> HTTP 200" in sent.output and "delivered" in sent.output
    (got,) = [r for r in receiver.requests if r.path.startswith("/ocpcapi")]
    assert got.json()["conversionTypes"][0]["logidUrl"] == BAIDU
    (queued,) = [r for r in rows(rt.stores.sessions) if r.destination == "baidu"]
    assert queued.state == "delivered"  # sent once, by the test
    none = CliRunner().invoke(main, [*test, "baidu"])
    assert none.exit_code == 1 and "nothing is queued" in none.output
    hook = CliRunner().invoke(main, [*test, "crm"])  # a test event: counts nothing
    assert hook.exit_code == 0, hook.output
    assert receiver.requests[-1].json()["id"].startswith("test-")
    receiver.answer("/crm", status=500, body="<html>down</html>", times=1)
    failed = CliRunner().invoke(main, [*test, "crm"])
    assert (
        failed.exit_code == 1 and "-> HTTP 500" in failed.output and "<html>down" in failed.output
    )
    unknown = CliRunner().invoke(main, [*test, "x"])
    assert unknown.exit_code == 1 and "has: baidu, crm" in unknown.output
    missing = CliRunner().invoke(main, [*test, "crm", "--call", "nope"])
    assert missing.exit_code == 1 and "call nope of this site" in missing.output
    assert len(rows(rt.stores.sessions)) == 4  # a test send queues nothing


def test_a_stored_destination_this_dni_cannot_use_is_left_out() -> None:
    good = {"name": "crm", "platform": "webhook", "on": ["call.created"], "settings": {}}
    gone = {**good, "name": "old", "platform": "myspace"}
    odd = {**good, "name": "new", "added_later": True}
    assert [d.name for d in outbox.destinations([good, gone, odd, {"name": "broken"}])] == [
        "crm",
        "new",
    ]

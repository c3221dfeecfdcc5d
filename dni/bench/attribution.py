"""`dni bench attribution`: attribution accuracy over a simulated month with known truth.

Visits arrive on a daily curve, stay a few minutes with heartbeats, some tap the tel: link and
call during or after the visit, some call again days later. Everything runs through the real
Lua pool and the real attribution code on a simulated clock, at pool sizes of 0.25x to 2x the
peak concurrency, beside two naive baselines computed on the same traffic.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

import phonenumbers
from phonenumbers import geocoder
from sqlalchemy import select

from dni.attribution import attribute_pending
from dni.bench.stores import Scratch, scratch_stores, write_geoip
from dni.calls import CallRecord, record_call
from dni.config import Settings
from dni.geo import IpRegions, province
from dni.history import flush_history
from dni.models import Call
from dni.sites import SiteDirectory
from dni.store import Scripts, Stores, connect_redis
from dni.visits import RateLimit, VisitInput, Visits

LEASE = 1800
GRACE = 7200
SURE = 0.9  # a credit at least this confident is presented as fact
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
START = datetime(2026, 10, 1, tzinfo=UTC)


@dataclass
class SimVisit:
    index: int
    start: datetime
    beats: list[datetime]
    tap: datetime | None = None
    calls: list[datetime] = field(default_factory=list)
    province: int = 0  # where the visitor's IP address is (index into PROVINCES)
    caller_province: int = 0  # where their phone number is from

    @property
    def last_seen(self) -> datetime:
        return self.beats[-1] if self.beats else self.start


# Where visitors are, by weight; a caller's number is from the visitor's own province this often
# (the rest moved, or travel: China's numbers keep the province they were issued in).
PROVINCES = (
    ("广东", 18),
    ("江苏", 10),
    ("浙江", 10),
    ("山东", 8),
    ("河南", 7),
    ("四川", 7),
    ("北京", 6),
    ("上海", 6),
    ("湖北", 6),
    ("福建", 6),
    ("湖南", 5),
    ("河北", 5),
)
SAME_PROVINCE = 0.75


def simulate(days: int, per_day: int, seed: int) -> list[SimVisit]:
    """The month's visits: arrival curve peaking in the evening, 3 % call, 10 % call again."""
    rng = random.Random(seed)
    visits: list[SimVisit] = []
    for day in range(days):
        for _ in range(per_day):
            # Beijing evening peak: density 1 + sin over the day, sampled by rejection.
            while True:
                second = rng.uniform(0, 86_400)
                if rng.random() < (1 + math.sin((second / 86_400 - 0.3) * 2 * math.pi)) / 2:
                    break
            start = START + timedelta(days=day, seconds=second)
            stay = rng.expovariate(1 / 240)
            beats = [start + timedelta(seconds=s) for s in range(60, int(stay), 60)]
            visit = SimVisit(len(visits), start, beats)
            if rng.random() < 0.03:
                if rng.random() < 0.7:  # during the visit
                    at = start + timedelta(seconds=rng.uniform(5, max(stay, 10)))
                    if rng.random() < 0.5:
                        visit.tap = at - timedelta(seconds=3)
                else:  # later, from a note of the number
                    at = visit.last_seen + timedelta(seconds=rng.expovariate(1 / 1200))
                visit.calls.append(at)
                if rng.random() < 0.1:
                    visit.calls.append(at + timedelta(days=rng.uniform(1, 5)))
            visits.append(visit)
    places = random.Random(seed + 1)  # its own stream: the traffic above stays the same
    names = range(len(PROVINCES))
    weights = [weight for _, weight in PROVINCES]
    for visit in visits:
        visit.province = places.choices(names, weights)[0]
        same = places.random() < SAME_PROVINCE
        visit.caller_province = visit.province if same else places.choices(names, weights)[0]
    return visits


@cache
def mobile_prefixes() -> dict[int, list[str]]:
    """Three 7-digit mobile prefixes per province, as phonenumbers' geocoder places them."""
    found: dict[int, list[str]] = {i: [] for i in range(len(PROVINCES))}
    for head in ("139", "138", "137", "136", "135", "159", "158", "150", "186", "189"):
        for block in range(0, 10_000, 37):
            prefix = f"{head}{block:04d}"
            number = phonenumbers.parse(f"+86{prefix}0000")
            place = province(geocoder.description_for_number(number, "zh"))
            for i, (name, _) in enumerate(PROVINCES):
                if place == name and len(found[i]) < 3:
                    found[i].append(prefix)
    missing = [PROVINCES[i][0] for i, prefixes in found.items() if not prefixes]
    assert not missing, f"no mobile prefix found for {missing}"
    return found


def caller_number(visit: SimVisit, prefixes: dict[int, list[str]]) -> str:
    """A number unique to the visitor, from their caller province."""
    options = prefixes[visit.caller_province]
    return f"+86{options[visit.index // 10_000 % len(options)]}{visit.index % 10_000:04d}"


def visit_ip(visit: SimVisit) -> str:
    return f"36.{visit.province + 1}.{visit.index // 250 % 250}.{visit.index % 250 + 1}"


def peak_concurrency(visits: list[SimVisit]) -> int:
    edges = [(v.start, 1) for v in visits] + [
        (v.last_seen + timedelta(seconds=LEASE), -1) for v in visits
    ]
    peak = live = 0
    for _, step in sorted(edges):
        live += step
        peak = max(peak, live)
    return peak


@dataclass
class Score:
    calls: int = 0
    credited: int = 0
    correct: int = 0
    ambiguous: int = 0
    sure_but_wrong: int = 0  # wrong credits stated with confidence >= SURE: silent ones

    def __add__(self, other: Score) -> Score:
        return Score(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def line(self, name: str) -> str:
        precision = self.correct / self.credited if self.credited else 1.0
        recall = self.correct / self.calls if self.calls else 1.0
        ambiguous = self.ambiguous / max(self.calls, 1)
        wrong = self.credited - self.correct
        return (
            f"{name:<34}{precision:>10.1%}{recall:>9.1%}{ambiguous:>11.1%}{wrong:>8}"
            f"{self.sure_but_wrong:>7}"
        )


SITE = """
[[site]]
key = "bench"
domains = ["shop.bench.test"]
[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "00000-{last:05d}"
lease_seconds = {lease}
grace_seconds = {grace}
overflow = "share"
"""


def run_dni(visits: list[SimVisit], size: int, geoip: bool) -> Score:
    """The real thing: Lua pool, heartbeats, taps, flushes, attribution (with or without a
    GeoIP database placing the visitors' addresses)."""
    site_file = SITE.format(last=size - 1, lease=LEASE, grace=GRACE)
    with scratch_stores(site_file, START) as scratch:
        if not geoip:
            return _replay(visits, scratch, None)
        networks = {f"36.{i + 1}.0.0/16": {"zh-CN": name} for i, (name, _) in enumerate(PROVINCES)}
        return _replay(
            visits, scratch, IpRegions(str(write_geoip(scratch.folder / "city.mmdb", networks)))
        )


def _replay(visits: list[SimVisit], scratch: Scratch, regions: IpRegions | None) -> Score:
    sessions = scratch.sessions
    stores = Stores(connect_redis(Settings(redis_url=scratch.redis_url)), Scripts(), sessions)
    directory = SiteDirectory(sessions, ttl=3600)
    engine = Visits(stores, directory.by_id, RateLimit(10**9, 60))
    site = directory.get("bench")
    assert site is not None
    events: list[tuple[datetime, int, str, SimVisit, int]] = []
    for v in visits:
        events.append((v.start, 0, "start", v, 0))
        events += [(b, 1, "beat", v, 0) for b in v.beats]
        if v.tap:
            events.append((v.tap, 2, "tap", v, 0))
        events += [(c, 3, "call", v, i) for i, c in enumerate(v.calls)]
    events.sort(key=lambda e: (e[0], e[1], e[3].index))
    prefixes = mobile_prefixes()
    ids: dict[int, str] = {}
    shown: dict[int, tuple[str, str]] = {}
    truth: dict[str, str] = {}
    for at, _, kind, v, n in events:
        answer = None
        if kind == "start":
            data = VisitInput(
                f"visitor-{v.index:07d}", "https://shop.bench.test/?gclid=x", "", UA, visit_ip(v)
            )
            answer = engine.visit(site, data, at)
            ids[v.index] = answer.visit or ""
        elif kind == "beat" and ids.get(v.index):
            answer = engine.heartbeat(site, ids[v.index], None, at)
            ids[v.index] = answer.visit or ids[v.index]
        elif kind == "tap" and ids.get(v.index):
            engine.record_event(site, ids[v.index], "tel_click", "", at)
            continue
        elif kind == "call":
            number = shown.get(v.index)
            if number is None:
                continue  # never got a tracking number: the call goes to the shop's own
            call_id = f"sim-{v.index}-{n}"
            truth[call_id] = ids[v.index]
            flush_history(stores, at)
            with sessions.begin() as session:
                caller = caller_number(v, prefixes)
                record = CallRecord(
                    "sim", call_id, caller, number[0], at, "completed", 60, extension=number[1]
                )
                record_call(session, site, record, at)
            continue
        if answer is not None and answer.numbers:
            slot = answer.numbers[0]
            shown[v.index] = (slot.number_e164, slot.extension or "")
    flushed_at = events[-1][0] + timedelta(hours=3)
    flush_history(stores, flushed_at)
    with sessions.begin() as session:
        while attribute_pending(session, flushed_at, regions):
            pass
    score = Score()
    with sessions() as session:
        for call in session.scalars(select(Call)):
            score.calls += 1
            score.credited += call.visit_id is not None
            right = call.visit_id == truth[call.provider_call_id]
            score.correct += call.visit_id is not None and right
            score.sure_but_wrong += (
                call.visit_id is not None
                and not right
                and (call.attribution_confidence or 0) >= SURE
            )
            score.ambiguous += call.attribution_method == "ambiguous"
    return score


def run_baseline(visits: list[SimVisit], size: int, random_pick: bool, seed: int) -> Score:
    """Naive strategies on the same traffic, in memory.

    random_pick: a random free number, and a call goes to whoever held the number last.
    otherwise: least recently released first, credit only a lease covering the call (the
    newest if several), no grace window, no signals, no caller history.
    """
    rng = random.Random(seed)
    free: dict[int, float] = dict.fromkeys(range(size), 0.0)  # number -> released at
    busy: dict[int, float] = {}  # number -> lease end
    leases: list[tuple[int, float, float, int]] = []  # number, start, end, visit
    number_of: dict[int, int] = {}
    for v in sorted(visits, key=lambda x: x.start):
        t = v.start.timestamp()
        for n, end in list(busy.items()):
            if end < t:
                del busy[n]
                free[n] = end
        if free:
            n = rng.choice(list(free)) if random_pick else min(free, key=lambda k: (free[k], k))
            del free[n]
        else:
            n = rng.choice(list(busy)) if random_pick else min(busy, key=lambda k: (busy[k], k))
        end = v.last_seen.timestamp() + LEASE
        busy[n] = max(busy.get(n, 0.0), end)
        leases.append((n, t, end, v.index))
        number_of[v.index] = n
    by_number: dict[int, list[tuple[int, float, float, int]]] = {}
    for lease in leases:
        by_number.setdefault(lease[0], []).append(lease)
    score = Score()
    for v in visits:
        for call in v.calls:
            t = call.timestamp()
            held = by_number[number_of[v.index]]
            if random_pick:
                before = [x for x in held if x[1] <= t]
                guess = max(before, key=lambda x: x[1])[3] if before else None
            else:
                covering = [x for x in held if x[1] <= t <= x[2]]
                guess = max(covering, key=lambda x: x[1])[3] if covering else None
            score.calls += 1
            score.credited += guess is not None
            score.correct += guess == v.index
            score.sure_but_wrong += guess is not None and guess != v.index  # no doubt stated
    return score


FACTORS = (0.25, 0.5, 1.0, 2.0)
RUNS = ("dni", "dni without GeoIP", "random number + last holder", "no grace, no signals")


def run_month(visits: list[SimVisit], size: int, run: str) -> Score:
    """One of RUNS on one simulated month at one pool size (a task for a worker process)."""
    if run.startswith("dni"):
        return run_dni(visits, size, geoip=run == "dni")
    return run_baseline(visits, size, run.startswith("random"), 7)


def run_attribution_benchmark(
    days: int,
    per_day: int,
    seed: int,
    months: int,
    echo: Callable[[str], None],
    factors: Sequence[float] = FACTORS,
) -> None:
    """Print accuracy per pool size (`factors` x peak concurrency), pooled over `months` months
    of traffic (seeds seed, seed + 1, …), the runs spread over the machine's cores."""
    seeds = range(seed, seed + months)
    traffic = [simulate(days, per_day, seed=s) for s in seeds]
    peaks = [peak_concurrency(visits) for visits in traffic]
    calls = sum(len(v.calls) for visits in traffic for v in visits)
    visits = sum(len(visits) for visits in traffic)
    setup = f"lease {LEASE // 60} min, grace {GRACE // 3600} h, overflow share"
    if months == 1:
        what = (
            f"{days} days, {visits} visits, {calls} calls (seed {seed}), "
            f"peak concurrency {peaks[0]}"
        )
    else:
        what = (
            f"{months} x {days} days (seeds {seed}-{seed + months - 1}), {visits} visits, "
            f"{calls} calls, peak concurrency {min(peaks)}-{max(peaks)}"
        )
    echo(f"dni bench attribution: {what} ({setup})")
    echo(
        f"visitors in {len(PROVINCES)} provinces, callers' numbers from the visitor's "
        f"{SAME_PROVINCE:.0%} of the time; sure = wrong at confidence >= {SURE}"
    )
    echo(f"{'pool size':<34}{'precision':>10}{'recall':>9}{'ambiguous':>11}{'wrong':>8}{'sure':>7}")
    sizes = {(f, i): max(1, round(peak * f)) for f in factors for i, peak in enumerate(peaks)}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {
            (f, run, i): pool.submit(run_month, traffic[i], sizes[(f, i)], run)
            for f in factors
            for run in RUNS
            for i in range(months)
        }
        for f in factors:
            for run in RUNS:
                score = sum((futures[(f, run, i)].result() for i in range(months)), Score())
                size = f" = {sizes[(f, 0)]}" if months == 1 else ""
                echo(score.line(f"{f}x{size}: dni" if run == "dni" else f"    {run}"))

"""One sentence per anomaly, with the numbers behind it, for a dispatcher.

Site codes are shown as city names where the site directory knows them (the
simulator's catalogue), and as the code otherwise.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pipeline.core.fleet_catalog import SITES
from pipeline.core.lane_model import Lane, Risk, Threshold

_CITY = {s.gln: s.city for s in SITES}
STAGE_WORDS = {
    "created": "since it was created", "picked_up": "since pick-up", "departed": "since departure",
    "arrived": "since arrival", "out_for_delivery": "since it went out for delivery",
}
_SCOPE_WORDS = {"lane": "on this lane", "carrier×mode": "with this carrier on this mode",
                "mode": "on this mode", "site": "at this site", "fixed": ""}


def site_name(code: str) -> str:
    return _CITY.get(code, code)


def lane_name(lane: Lane) -> str:
    """
    >>> lane_name(Lane("4000000000000", "X-1", "road", "Nordfracht"))
    'Nordfracht road 4000000000000→X-1'
    """
    return f"{lane.carrier} {lane.mode} {site_name(lane.origin)}→{site_name(lane.destination)}"


def hours(seconds: float) -> str:
    """
    >>> hours(5400), hours(41 * 3600 + 100), hours(-7200)
    ('1.5 h', '41 h', '-2.0 h')
    """
    h = seconds / 3600
    return f"{h:.1f} h" if abs(h) < 10 else f"{h:.0f} h"


def when(t: float) -> str:
    """
    >>> when(1775152800.0)
    '2 Apr 18:00 UTC'
    """
    d = datetime.fromtimestamp(t, timezone.utc)
    return f"{d.day} {d:%b %H:%M} UTC"


def _norm(th: Threshold, what: str) -> str:
    if th.scope == "fixed":
        return f"the fixed limit is {hours(th.seconds)}"
    return (f"{th.q * 100:g} % of {th.n} {what} {_SCOPE_WORDS[th.scope]} took ≤ {hours(th.quantile)}"
            f" (alarm at {hours(th.seconds)})")


def late_delivered(lane: Lane, promise: float, delivered: float, tolerance: float) -> str:
    return (f"{lane_name(lane)}: delivered {when(delivered)}, {hours(delivered - promise)} after the promise of "
            f"{when(promise)} (tolerance {hours(tolerance)}).")


def late_open(lane: Lane, promise: float, now: float, last_type: str, last_time: float) -> str:
    return (f"{lane_name(lane)}: promised for {when(promise)}, not delivered {hours(now - promise)} later; "
            f"last event {last_type.replace('_', ' ')} {hours(now - last_time)} ago.")


def at_risk(lane: Lane, stage: str, elapsed: float, risk: Risk, promise: float, now: float, pending: float) -> str:
    announced = f"; the carrier announced {hours(pending)} of delay" if pending > 0 else ""
    return (f"{lane_name(lane)}: {hours(elapsed)} {STAGE_WORDS.get(stage, 'in ' + stage)}{announced}; "
            f"{risk.q * 100:g} % of {risk.n} deliveries {_SCOPE_WORDS[risk.scope]} took ≤ {hours(risk.typical)} "
            f"from there; promised for {when(promise)}, {hours(promise - now)} from now: "
            f"{risk.p * 100:.0f} % chance of missing it.")


def silent(lane: Lane, stage: str, gap: float, th: Threshold, ongoing: bool, pending: float) -> str:
    state = "no event for" if ongoing else "went silent for"
    announced = f" plus {hours(pending)} of announced delay" if pending > 0 else ""
    return (f"{lane_name(lane)}: {state} {hours(gap)} after {stage.replace('_', ' ')}; "
            f"{_norm(th, 'deliveries')} to report the next step{announced}.")


def dwell(lane: Lane, site: str, stage: str, duration: float, th: Threshold, ongoing: bool, pending: float) -> str:
    state = "at" if ongoing else "stayed at"
    end = "not departed yet" if ongoing else "then moved on"
    if stage == "arrived":
        end = "not out for delivery yet" if ongoing else "then went out for delivery"
    announced = f" plus {hours(pending)} of announced delay" if pending > 0 else ""
    return (f"{lane_name(lane)}: {state} {site_name(site)} for {hours(duration)} {STAGE_WORDS[stage]}, {end}; "
            f"{_norm(th, lane.mode + ' dwells')}{announced}.")


def sequence(lane: Lane, problem: str) -> str:
    return f"{lane_name(lane)}: impossible order of events: {problem}."

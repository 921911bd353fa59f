"""Managers' reports with pictures: occupancy per resource as a heat map by weekday and hour,
no-show and cancellation rates, moderation lead time and the busiest hours of a venue, each also
a CSV file.

The figures come from read-only queries of their domains (`bms.stats`, `moderation.stats`),
scoped to the venues the caller manages. Charts are SVG drawn here, on the server (pygal, and the
heat map by hand): no chart library reaches the browser. They are shown as images, so the SVG's own
styles stay inside the image and the page's CSP still allows no inline style; each image has a
text alternative and its figures are in a table beside it.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from typing import Annotated, Any

import pygal  # type: ignore[import-untyped]
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pygal.style import Style  # type: ignore[import-untyped]
from sqlmodel import Session

from bms import stats as bms_stats
from bms.booking import ResourceCtx
from core.auth import Principal
from core.db import open_session, utcnow
from core.deps import EngineDep
from core.errors import NotFound
from core.i18n import N_, local_name, translator
from core.models import Role, Venue
from moderation import stats as moderation_stats
from portal.layout import NAV, NavItem, page_locale
from portal.manager import guard, page, zone

router = APIRouter(include_in_schema=False)

NAV.append(NavItem("/reports", N_("Reports"), (Role.venue_manager.value,)))

CHARTS = ("occupancy", "outcomes", "lead-time", "busiest-hours")
# An SVG opened on its own may style itself, and nothing else: no script, no fetch.
SVG_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "private, max-age=60",
}
STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#1d2430",
    foreground_strong="#1d2430",
    foreground_subtle="#5b6577",
    colors=("#2156d1", "#b45309", "#15803d", "#7c3aed"),
    font_family="system-ui, sans-serif",
    title_font_size=18,
    label_font_size=13,
    major_label_font_size=13,
    legend_font_size=14,
)
WEEKDAY_LABELS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))
_SCRIPT = re.compile(rb"<script\b.*?</script>", re.S)


@dataclass
class Figures:
    venue: Venue
    since: datetime
    until: datetime
    ctxs: list[ResourceCtx]
    occupancy: list[bms_stats.Occupancy]
    outcomes: list[bms_stats.Outcomes]
    lead: list[moderation_stats.LeadTimes]
    busiest: list[float]


ALL_PARTS = frozenset({"occupancy", "outcomes", "lead"})
# What each chart and CSV needs: one picture reads only its own figures.
PARTS = {
    "occupancy": frozenset({"occupancy"}),
    "busiest-hours": frozenset({"occupancy"}),
    "outcomes": frozenset({"outcomes"}),
    "lead-time": frozenset({"lead"}),
}


def figures(
    s: Session,
    principal: Principal,
    venue_key: str,
    weeks: int,
    end: date | None = None,
    parts: frozenset[str] = ALL_PARTS,
    resource: str | None = None,
) -> Figures:
    """The venue's figures (`parts` of them; one `resource` only when given) over `weeks` weeks up
    to now, or up to the end of the local day `end`."""
    venue, ctxs = bms_stats.managed_venue_resources(s, principal, venue_key)
    if resource is not None:
        ctxs = [c for c in ctxs if c.resource.key == resource]
        if not ctxs:
            raise NotFound("resource_not_found", f"no resource {resource!r} in this venue", field="resource")
    if end is None:
        until = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    else:
        tz = zone(ctxs[0].site.timezone if ctxs else "UTC")
        until = datetime.combine(end + timedelta(days=1), time(0), tz).astimezone(UTC)
    since = until - timedelta(weeks=weeks)
    occ = bms_stats.occupancy(s, ctxs, since, until) if "occupancy" in parts else []
    return Figures(
        venue=venue,
        since=since,
        until=until,
        ctxs=ctxs,
        occupancy=occ,
        outcomes=bms_stats.outcomes(s, ctxs, since, until) if "outcomes" in parts else [],
        lead=moderation_stats.lead_times(s, ctxs, since, until) if "lead" in parts else [],
        busiest=bms_stats.busiest_hours(occ),
    )


Weeks = Annotated[int, Query(ge=1, le=52)]
End = Annotated[date | None, Query(description="the last local day of the period; default: up to now")]



def _local_names(f: Any, locale: str) -> dict[str, str]:
    """The resources' names in the page's language (the site file may give one per language)."""
    return {c.resource.key: local_name(c.resource, locale) for c in f.ctxs}

@router.get("/reports", response_class=HTMLResponse)
def reports_page(
    request: Request,
    engine: EngineDep,
    venue: Annotated[str, Query(max_length=63)] = "",
    weeks: Weeks = 4,
    end: End = None,
) -> Response:
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal
    with open_session(engine) as s:
        venues = bms_stats.managed_venues(s, principal)
        if not venues:
            return page(request, "report_index.html", principal, venues=[], f=None, weeks=weeks, end=end)
        f = figures(s, principal, venue or venues[0].key, weeks, end)
    tz = f.ctxs[0].site.timezone if f.ctxs else "UTC"
    local = _local_names(f, page_locale(request, principal))
    top = sorted((h for h in range(24) if f.busiest[h] > 0), key=lambda h: -f.busiest[h])[:3]
    return page(
        request,
        "report_index.html",
        principal,
        venues=venues,
        f=f,
        weeks=weeks,
        end=end,
        tz=tz,
        zone=zone,
        busiest_top=", ".join(f"{h}:00" for h in sorted(top)),
        heat_class=heat_class,
        weekday_labels=WEEKDAY_LABELS,
        rname=lambda x: local.get(x.resource_key, x.resource_name),
    )


def heat_class(rate: float) -> str:
    return f"heat-{0 if rate <= 0 else min(5, 1 + int(rate * 5))}"


# ---------------------------------------------------------------- pictures


def _pygal_svg(chart: Any) -> bytes:
    """pygal's SVG without its script (the tooltips' configuration; images never run it anyway)."""
    return _SCRIPT.sub(b"", chart.render())


def _bar(title: str, labels: list[str], series: list[tuple[str, list[float | None]]], unit: str) -> bytes:
    chart = pygal.Bar(
        js=[],
        style=STYLE,
        width=720,
        height=360,
        title=title,
        x_label_rotation=20 if len(labels) > 6 else 0,
        legend_at_bottom=True,
        print_values=False,
        value_formatter=lambda v: f"{v:g}{unit}" if v is not None else "—",
        range=(0, max([1.0, *(v for _, values in series for v in values if v is not None)])),
        show_y_guides=True,
        explicit_size=False,
    )
    chart.x_labels = labels
    for name, values in series:
        chart.add(name, values)
    return _pygal_svg(chart)


def heat_svg(o: bms_stats.Occupancy, title: str, weekdays: list[str]) -> bytes:
    """A resource's occupancy: 7 rows (weekdays) by 24 columns (local hours), darker when fuller."""
    cell, left, top = 26, 48, 44
    width, height = left + 24 * cell + 8, top + 7 * cell + 28
    palette = ("#f1f4f9", "#d5e3fb", "#a9c5f5", "#6d9ced", "#2f64c9", "#173d85")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" font-family="system-ui, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="22" font-size="16" fill="#1d2430">{escape(title)}</text>',
    ]
    for hr in range(0, 24, 3):
        parts.append(
            f'<text x="{left + hr * cell + cell / 2}" y="{top - 6}" text-anchor="middle" fill="#5b6577">{hr}</text>'
        )
    for wd in range(7):
        y = top + wd * cell
        parts.append(
            f'<text x="{left - 8}" y="{y + cell * 0.65}" text-anchor="end" fill="#1d2430">{escape(weekdays[wd])}</text>'
        )
        for hr in range(24):
            rate = o.rate(wd, hr)
            shade = palette[int(heat_class(rate)[5:])]
            parts.append(
                f'<rect x="{left + hr * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" rx="3" fill="{shade}">'
                f"<title>{escape(weekdays[wd])} {hr}:00 {round(rate * 100)} %</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts).encode()


def _figures_for(
    request: Request, engine: Any, venue: str, chart: str, weeks: int, end: date | None, resource: str | None = None
) -> tuple[Principal | Response, Figures | None]:
    principal = guard(request, engine, Role.venue_manager)
    if not isinstance(principal, Principal):
        return principal, None
    with open_session(engine) as s:
        return principal, figures(s, principal, venue, weeks, end, PARTS[chart], resource)


@router.get("/reports/{venue}/{chart}.svg")
def chart_svg(
    request: Request, engine: EngineDep, venue: str, chart: str, weeks: Weeks = 4, resource: str = "", end: End = None
) -> Response:
    if chart not in CHARTS:
        raise NotFound("chart_not_found", f"no chart {chart!r}")
    principal, f = _figures_for(request, engine, venue, chart, weeks, end, resource if chart == "occupancy" else None)
    if f is None or not isinstance(principal, Principal):
        return principal if isinstance(principal, Response) else Response(status_code=403)
    locale = page_locale(request, principal)
    t = translator(locale)
    local = _local_names(f, locale)
    names = [local.get(o.resource_key, o.resource_name) for o in f.outcomes]
    if chart == "occupancy":
        o = f.occupancy[0]
        name = local.get(o.resource_key, o.resource_name)
        body = heat_svg(o, t("Occupancy of {name}", name=name), [t(w) for w in WEEKDAY_LABELS])
    elif chart == "outcomes":
        body = _bar(
            t("No-shows and cancellations"),
            names,
            [
                (t("No-show rate"), [round(x.no_show_rate * 100, 1) for x in f.outcomes]),
                (t("Cancellation rate"), [round(x.cancellation_rate * 100, 1) for x in f.outcomes]),
            ],
            " %",
        )
    elif chart == "lead-time":
        body = _bar(
            t("Time to a moderation decision (hours)"),
            [local.get(x.resource_key, x.resource_name) for x in f.lead],
            [
                (t("Median"), [None if x.median_minutes is None else round(x.median_minutes / 60, 1) for x in f.lead]),
                (
                    t("Longest"),
                    [None if x.longest_minutes is None else round(x.longest_minutes / 60, 1) for x in f.lead],
                ),
            ],
            " h",
        )
    else:
        body = _bar(
            t("Busiest hours (booked place-hours by hour of the day)"),
            [str(h) for h in range(24)],
            [(t("Booked place-hours"), [round(v, 1) for v in f.busiest])],
            " h",
        )
    return Response(body, media_type="image/svg+xml", headers=SVG_HEADERS)


@router.get("/reports/{venue}/{chart}.csv")
def chart_csv(
    request: Request, engine: EngineDep, venue: str, chart: str, weeks: Weeks = 4, end: End = None
) -> Response:
    if chart not in CHARTS:
        raise NotFound("chart_not_found", f"no chart {chart!r}")
    principal, f = _figures_for(request, engine, venue, chart, weeks, end)
    if f is None or not isinstance(principal, Principal):
        return principal if isinstance(principal, Response) else Response(status_code=403)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["period_start_utc", f.since.isoformat(), "period_end_utc", f.until.isoformat()])
    if chart == "occupancy":
        w.writerow(["resource", "weekday", "hour", "booked_place_minutes", "offered_place_minutes", "occupancy"])
        days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        for o in f.occupancy:
            for wd in range(7):
                for hr in range(24):
                    w.writerow(
                        [
                            o.resource_key,
                            days[wd],
                            hr,
                            round(o.booked[wd][hr], 1),
                            round(o.offered[wd][hr], 1),
                            round(o.rate(wd, hr), 4),
                        ]
                    )
    elif chart == "outcomes":
        w.writerow(["resource", "confirmed_bookings", "cancelled", "no_shows", "cancellation_rate", "no_show_rate"])
        for x in f.outcomes:
            w.writerow(
                [
                    x.resource_key,
                    x.decided,
                    x.cancelled,
                    x.no_show,
                    round(x.cancellation_rate, 4),
                    round(x.no_show_rate, 4),
                ]
            )
    elif chart == "lead-time":
        w.writerow(["resource", "approved", "rejected", "lapsed", "median_minutes", "longest_minutes"])
        for lt in f.lead:
            w.writerow(
                [
                    lt.resource_key,
                    lt.approved,
                    lt.rejected,
                    lt.lapsed,
                    "" if lt.median_minutes is None else round(lt.median_minutes, 1),
                    "" if lt.longest_minutes is None else round(lt.longest_minutes, 1),
                ]
            )
    else:
        w.writerow(["hour", "booked_place_hours"])
        for hr, v in enumerate(f.busiest):
            w.writerow([hr, round(v, 2)])
    filename = f"{f.venue.key}-{chart}-{f.until.date().isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )

"""Visits: invitations, the desk (check-in by code or by hand, walk-ins, check-out), holds of the
deny list, temporary door access, and the sweeps (no-shows, automatic check-out, retention).

Every function flushes and never commits: routes and jobs bring the unit of work. Refusals that
are security events (a bad scan, a host asking for doors they may not open) are audited and
raised with ``keep=True`` after validation and before any other write, so the audit row is the
only thing they leave.

Door access goes through the access timeline only (`access.windows.set_windows`, source type
``visit``): a window on the visit's doors from check-in until the expected end plus the site's
release offset, written at check-in and switched off at once by check-out, automatic check-out,
denial or cancellation. The visitor's door identity is a pseudonymous user; the visit's QR secret
is that user's ``qr`` credential (a keyed token, decided online), and a day badge handed out at
the desk is a second credential valid for the visit only.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from access.decisions import note_credential
from access.models import AccessEvent, AccessWindow, Credential, Door, DoorResource, lookup_token
from access.protocol import canonical_card, compact_hex
from access.windows import replan_user, set_windows
from core import audit, outbox
from core.audit import Actor
from core.auth import Principal
from core.db import ident, utcnow
from core.errors import AppError, Conflict, Forbidden, Invalid, NotFound
from core.models import Role, RoleGrant, Site, User
from vms import tokens
from vms.models import (
    OPEN,
    OVER,
    DenyEntry,
    Visit,
    VisitEvent,
    Visitor,
    VisitorPolicy,
    VisitSeries,
    VisitStatus,
)
from vms.schemas import (
    MAX_SERIES_DAYS,
    DenyIn,
    InviteIn,
    PolicyIn,
    RepeatIn,
    VisitorIn,
    VisitorPublic,
    VisitPublic,
    WalkInIn,
)

SOURCE = "visit"
WALK_IN_HOURS = 4
PSEUDONYM_DOMAIN = "visitors.invalid"


# ---------------------------------------------------------------- small helpers


def normalise_name(value: str | None) -> str | None:
    if not value:
        return None
    folded = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(folded.split()) or None


def normalise_email(value: str | None) -> str | None:
    return value.strip().casefold() if value else None


def normalise_phone(value: str | None) -> str | None:
    if not value:
        return None
    digits = "".join(ch for ch in value if ch.isdigit())
    if value.strip().startswith("00"):
        digits = digits[2:]
    return digits or None


def policy_of(session: Session, site_id: int) -> VisitorPolicy:
    return session.get(VisitorPolicy, site_id) or VisitorPolicy(site_id=site_id)


def site_by_key(session: Session, key: str) -> Site:
    site = session.exec(select(Site).where(col(Site.key) == key)).first()
    if site is None:
        raise NotFound("site_not_found", f"no site {key!r}", field="site")
    return site


def _is_resident(session: Session, user_id: int, site_id: int) -> bool:
    return (
        session.exec(
            select(RoleGrant.id).where(
                col(RoleGrant.user_id) == user_id,
                col(RoleGrant.site_id) == site_id,
                col(RoleGrant.role).in_([Role.resident.value, Role.reception.value]),
            )
        ).first()
        is not None
    )


def require_desk(principal: Principal, site_id: int) -> None:
    """Reception of this site, or an admin."""
    if not principal.at_reception(site_id):
        raise Forbidden("not_reception", "this needs the reception of the visit's site")


def _visible(principal: Principal, visit: Visit) -> bool:
    return principal.at_reception(visit.site_id) or visit.host_id == principal.user_id


def get_visit(session: Session, principal: Principal, visit_id: int) -> Visit:
    visit = session.get(Visit, visit_id)
    if visit is None or not _visible(principal, visit):
        raise NotFound("visit_not_found", f"no visit {visit_id}")
    return visit


def _staff_of(session: Session, user_id: int, site_id: int) -> bool:
    return (
        session.exec(
            select(RoleGrant.id).where(
                col(RoleGrant.user_id) == user_id,
                or_(
                    col(RoleGrant.role) == Role.admin.value,
                    (col(RoleGrant.role) == Role.reception.value) & (col(RoleGrant.site_id) == site_id),
                ),
            )
        ).first()
        is not None
    )


def host_door_ids(session: Session, host_id: int, site_id: int, start: datetime, end: datetime) -> set[int]:
    """The site's doors the host may open during [start, end): from the host's access windows
    (bookings' resources and standing access levels' doors), as the access timeline holds them.
    Reception and admins may let a visitor through any door of the site."""
    doors = {ident(d): d for d in session.exec(select(Door).where(col(Door.site_id) == site_id, Door.active)).all()}
    if _staff_of(session, host_id, site_id):
        return set(doors)
    windows = session.exec(
        select(AccessWindow).where(
            col(AccessWindow.user_id) == host_id, col(AccessWindow.end) > start, col(AccessWindow.start) < end
        )
    ).all()
    found = {w.door_id for w in windows if w.door_id is not None}
    resource_ids = {w.resource_id for w in windows if w.resource_id is not None}
    if resource_ids:
        found |= set(
            session.exec(select(DoorResource.door_id).where(col(DoorResource.resource_id).in_(resource_ids))).all()
        )
    return {d for d in found if d in doors}


def _door_keys(session: Session, door_ids: Iterable[int]) -> dict[int, str]:
    ids = list(door_ids)
    if not ids:
        return {}
    return {ident(d): d.key for d in session.exec(select(Door).where(col(Door.id).in_(ids))).all()}


def _pick_doors(
    session: Session, actor: Actor, site: Site, host_id: int, wanted: list[str] | None, start: datetime, end: datetime
) -> list[int]:
    allowed = host_door_ids(session, host_id, ident(site), start, end)
    if wanted is None:
        return sorted(allowed)
    by_key = {
        d.key: ident(d) for d in session.exec(select(Door).where(col(Door.key).in_(wanted), Door.site_id == site.id))
    }
    refused = sorted(k for k in set(wanted) if by_key.get(k) not in allowed)
    if refused:
        audit.record(session, actor, "visit.doors_refused", "user", host_id, site_id=site.id, doors=refused[:20])
        raise Forbidden(
            "door_not_allowed",
            f"the host may not open {', '.join(refused[:5])} at that time, so a visitor may not either",
            field="doors",
            keep=True,
        )
    return sorted({by_key[k] for k in wanted})


def _new_visitor(session: Session, site_id: int, data: VisitorIn) -> Visitor:
    user = User(
        email=f"visitor-{secrets.token_hex(10)}@{PSEUDONYM_DOMAIN}", name="Visitor", password_hash=None, locale="en"
    )
    session.add(user)
    session.flush()
    visitor = Visitor(
        site_id=site_id,
        user_id=ident(user),
        name=data.name,
        email=str(data.email) if data.email else None,
        phone=data.phone,
        company=data.company,
        note=data.note,
        name_norm=normalise_name(data.name),
        email_norm=normalise_email(str(data.email) if data.email else None),
        phone_norm=normalise_phone(data.phone),
    )
    session.add(visitor)
    session.flush()
    user.name = f"Visitor #{ident(visitor)}"
    session.add(user)
    return visitor


def _issue_token(session: Session, visit: Visit, visitor: Visitor, policy: VisitorPolicy) -> str:
    """A fresh secret for the visit, and the visitor's QR credential valid around its window."""
    visit.token_nonce = tokens.new_nonce()
    token = tokens.token_for(ident(visit), visit.token_nonce)
    visit.token_hash = tokens.digest(token)
    margin = timedelta(minutes=policy.margin_minutes)
    cred = Credential(
        user_id=visitor.user_id,
        kind="qr",
        value=lookup_token("qr", token),
        label=f"visit {ident(visit)}",
        valid_from=visit.start - margin,
        valid_until=visit.end + margin,
    )
    session.add(cred)
    session.flush()
    visit.qr_credential_id = ident(cred)
    session.add(visit)
    note_credential(session, ident(cred))
    return token


def visit_token(visit: Visit) -> str | None:
    """The QR secret of a live visit, derived again (never stored)."""
    if visit.token_nonce is None or visit.status in OVER:
        return None
    return tokens.token_for(ident(visit), visit.token_nonce)


def _revoke_credentials(session: Session, visit: Visit, now: datetime) -> None:
    for cred_id in (visit.qr_credential_id, visit.badge_credential_id):
        if cred_id is None:
            continue
        cred = session.get(Credential, cred_id)
        if cred is not None and cred.revoked_at is None:
            cred.revoked_at = now
            session.add(cred)
            session.flush()
            note_credential(session, cred_id)


def _door_access(session: Session, visit: Visit, visitor: Visitor, now: datetime, *, active: bool) -> None:
    policy = policy_of(session, visit.site_id)
    start = visit.checked_in_at or now
    end = max(visit.end, now) + timedelta(minutes=policy.release_minutes)
    set_windows(
        session,
        SOURCE,
        ident(visit),
        None,
        [visitor.user_id],
        start,
        end,
        "badge",
        active=active and bool(visit.door_ids),
        door_ids=list(visit.door_ids),
    )


def _event(session: Session, visit: Visit, kind: str, now: datetime) -> None:
    session.add(VisitEvent(site_id=visit.site_id, visit_id=ident(visit), kind=kind, at=now))


def _site_name(session: Session, site_id: int) -> Site:
    site = session.get(Site, site_id)
    assert site is not None
    return site


# ---------------------------------------------------------------- invitations


def _occurrences(
    site: Site, start: datetime, end: datetime, repeat: RepeatIn | None
) -> list[tuple[datetime, datetime]]:
    """The local wall-clock times of a weekly series in the site's zone: DST never moves a visit."""
    if repeat is None:
        return [(start, end)]
    zone = ZoneInfo(site.timezone)
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    first = local_start.date()
    last = repeat.until or first + timedelta(days=MAX_SERIES_DAYS)
    if (last - first).days > MAX_SERIES_DAYS:
        raise Invalid("unbounded_series", f"a series ends within {MAX_SERIES_DAYS} days", field="repeat.until")
    if last < first:
        raise Invalid("bad_series", "the series ends before it starts", field="repeat.until")
    out: list[tuple[datetime, datetime]] = []
    step = timedelta(weeks=repeat.every_weeks)
    day = first
    clock = local_start.time()
    length = local_end.replace(tzinfo=None) - local_start.replace(tzinfo=None)
    while day <= last and (repeat.count is None or len(out) < repeat.count):
        naive = datetime.combine(day, clock)
        out.append((naive.replace(tzinfo=zone).astimezone(UTC), (naive + length).replace(tzinfo=zone).astimezone(UTC)))
        day += step
    return out


def invite(session: Session, principal: Principal, data: InviteIn) -> list[tuple[Visit, str]]:
    """Pre-register one visitor, several for one event, or a weekly series; returns each visit
    with its token (the QR code can be drawn again later by the host)."""
    site = site_by_key(session, data.site)
    site_id = ident(site)
    host_id = data.host_id or principal.user_id
    if host_id != principal.user_id:
        require_desk(principal, site_id)
    elif not (principal.at_reception(site_id) or site_id in principal.resident_sites):
        raise Forbidden("not_of_site", "you may invite visitors only to your own site")
    host = session.get(User, host_id)
    if (
        host is None
        or not host.is_active
        or not (_is_resident(session, host_id, site_id) or _staff_of(session, host_id, site_id))
    ):
        raise NotFound("host_not_found", f"no host {host_id} at this site", field="host_id")
    if data.end <= utcnow():
        raise Invalid("window_over", "the visit's window is already over", field="end")
    occurrences = _occurrences(site, data.start, data.end, data.repeat)
    door_ids = _pick_doors(session, principal.actor, site, host_id, data.doors, data.start, occurrences[-1][1])
    policy = policy_of(session, site_id)
    out: list[tuple[Visit, str]] = []
    for person in data.visitors:
        visitor = _new_visitor(session, site_id, person)
        series = None
        if data.repeat is not None:
            series = VisitSeries(
                site_id=site_id, host_id=host_id, visitor_id=ident(visitor), rule=data.repeat.model_dump(mode="json")
            )
            session.add(series)
            session.flush()
        for start, end in occurrences:
            visit = Visit(
                site_id=site_id,
                host_id=host_id,
                visitor_id=ident(visitor),
                series_id=series.id if series else None,
                start=start,
                end=end,
                purpose=data.purpose,
                door_ids=door_ids,
            )
            session.add(visit)
            session.flush()
            token = _issue_token(session, visit, visitor, policy)
            out.append((visit, token))
            outbox.enqueue(session, "visit.invitation", _invitation_payload(session, visit, visitor, host, site))
    audit.record(
        session,
        principal.actor,
        "visit.invite",
        "visit",
        ",".join(str(v.id) for v, _ in out[:20]),
        site_id=site_id,
        host_id=host_id,
        visitors=[v.visitor_id for v, _ in out[:50]],
        doors=door_ids,
        occurrences=len(occurrences),
    )
    return out


def _invitation_payload(session: Session, visit: Visit, visitor: Visitor, host: User, site: Site) -> dict[str, Any]:
    return {
        "visit_id": visit.id,
        "to": visitor.email,
        "visitor_name": visitor.name,
        "host_name": host.name,
        "site": site.name,
        "site_timezone": site.timezone,
        "start": visit.start.isoformat(),
        "end": visit.end.isoformat(),
        "purpose": visit.purpose,
        "doors": sorted(_door_keys(session, visit.door_ids).values()),
        # the secret is never stored: the sender draws the code with vms.service.visit_token + vms.qr
        "qr_png": f"/api/v1/visits/{visit.id}/qr.png",
        "qr_svg": f"/api/v1/visits/{visit.id}/qr.svg",
        "locale": site.locale,
    }


# ---------------------------------------------------------------- the desk


def _desk_site(session: Session, principal: Principal, key: str | None) -> Site | None:
    if key is not None:
        return site_by_key(session, key)
    if len(principal.reception_sites) == 1:
        return session.get(Site, next(iter(principal.reception_sites)))
    return None


def _refuse_scan(
    session: Session,
    principal: Principal,
    visit: Visit | None,
    reason: str,
    message: str,
    status: int = 409,
    **details: Any,
) -> AppError:
    audit.record(
        session,
        principal.actor,
        "visit.scan",
        "visit",
        visit.id if visit else "-",
        result=reason,
        visitor_user_id=_visitor_user(session, visit),
        **details,
    )
    return AppError(reason, message, status=status, field="token", keep=True)


def _visitor_user(session: Session, visit: Visit | None) -> int | None:
    if visit is None:
        return None
    visitor = session.get(Visitor, visit.visitor_id)
    return visitor.user_id if visitor else None


def check_in_by_token(session: Session, principal: Principal, token: str, site_key: str | None) -> Visit:
    """The desk scans a code (or a scanner types it). Every scan is audited, good or bad, and a
    bad one says what the receptionist can do about it."""
    if not principal.reception_sites and not principal.admin:
        raise Forbidden("not_reception", "scanning visitors' codes is the reception's job")
    if not tokens.well_formed(token):
        raise _refuse_scan(session, principal, None, "token_malformed", "this is not a visit code: scan again", 422)
    visit = session.exec(select(Visit).where(col(Visit.token_hash) == tokens.digest(token)).with_for_update()).first()
    if visit is None:
        raise _refuse_scan(
            session, principal, None, "token_unknown", "no visit has this code: look the visitor up by name", 404
        )
    desk = _desk_site(session, principal, site_key)
    if (desk is not None and desk.id != visit.site_id) or not principal.at_reception(visit.site_id):
        raise _refuse_scan(
            session, principal, visit, "token_wrong_site", "this invitation is for another site: send the visitor there"
        )
    now = utcnow()
    policy = policy_of(session, visit.site_id)
    margin = timedelta(minutes=policy.margin_minutes)
    status = VisitStatus(visit.status)
    if status in (VisitStatus.cancelled, VisitStatus.denied):
        raise _refuse_scan(session, principal, visit, "token_revoked", "this invitation was cancelled: call the host")
    if status is VisitStatus.checked_in:
        raise _refuse_scan(
            session, principal, visit, "already_on_site", "this visitor is already checked in: check them out first"
        )
    if status is VisitStatus.checked_out:
        raise _refuse_scan(session, principal, visit, "token_used", "this code was used for a visit that is over")
    if status is VisitStatus.held:
        raise _refuse_scan(session, principal, visit, "held_for_decision", "this visit waits for a decision")
    if now < visit.start - margin:
        raise _refuse_scan(
            session, principal, visit, "token_not_yet_valid", f"this invitation starts at {visit.start.isoformat()}"
        )
    if now > visit.end + margin or status is VisitStatus.no_show:
        raise _refuse_scan(session, principal, visit, "token_expired", "this invitation's window is over: ask the host")
    visitor = session.get(Visitor, visit.visitor_id)
    assert visitor is not None
    return _admit(session, principal.actor, visit, visitor, now, how="scan")


def check_in(session: Session, principal: Principal, visit_id: int) -> Visit:
    """Check-in from today's list (a visitor without their code)."""
    visit = get_visit(session, principal, visit_id)
    require_desk(principal, visit.site_id)
    if visit.status != VisitStatus.invited:
        raise Conflict("not_expected", f"this visit is {visit.status}, not expected", field="status")
    now = utcnow()
    if now > visit.end + timedelta(minutes=policy_of(session, visit.site_id).margin_minutes):
        raise Conflict("window_over", "this visit's window is over: register a walk-in instead")
    visitor = session.get(Visitor, visit.visitor_id)
    assert visitor is not None
    return _admit(session, principal.actor, visit, visitor, now, how="list")


def deny_match(session: Session, site_id: int, visitor: Visitor) -> DenyEntry | None:
    conditions = []
    if visitor.name_norm:
        conditions.append(col(DenyEntry.name_norm) == visitor.name_norm)
    if visitor.email_norm:
        conditions.append(col(DenyEntry.email_norm) == visitor.email_norm)
    if visitor.phone_norm:
        conditions.append(col(DenyEntry.phone_norm) == visitor.phone_norm)
    if not conditions:
        return None
    return session.exec(select(DenyEntry).where(col(DenyEntry.site_id) == site_id, or_(*conditions))).first()


def _admit(session: Session, actor: Actor, visit: Visit, visitor: Visitor, now: datetime, *, how: str) -> Visit:
    match = deny_match(session, visit.site_id, visitor)
    if match is not None:
        visit.status = VisitStatus.held.value
        visit.hold_reason = f"deny list entry {match.id}" + (f": {match.reason}" if match.reason else "")
        session.add(visit)
        _event(session, visit, "held", now)
        session.flush()
        audit.record(
            session,
            actor,
            "visit.held",
            "visit",
            visit.id,
            visitor_user_id=visitor.user_id,
            deny_entry=match.id,
            how=how,
        )
        return visit
    _enter(session, visit, visitor, now)
    audit.record(
        session,
        actor,
        "visit.scan" if how == "scan" else "visit.check_in",
        "visit",
        visit.id,
        result="checked_in",
        visitor_user_id=visitor.user_id,
        doors=visit.door_ids,
        how=how,
    )
    return visit


def _enter(session: Session, visit: Visit, visitor: Visitor, now: datetime) -> None:
    visit.status = VisitStatus.checked_in.value
    visit.checked_in_at = now
    visit.hold_reason = None
    session.add(visit)
    session.flush()
    _door_access(session, visit, visitor, now, active=True)
    _event(session, visit, "arrival", now)
    host = session.get(User, visit.host_id)
    site = _site_name(session, visit.site_id)
    outbox.enqueue(
        session,
        "visit.arrival",
        {
            "visit_id": visit.id,
            "to": host.email if host else None,
            "host_name": host.name if host else "",
            "visitor_name": visitor.name,
            "company": visitor.company,
            "site": site.name,
            "site_timezone": site.timezone,
            "at": now.isoformat(),
            "locale": host.locale if host and host.locale_chosen else site.locale,
        },
    )
    session.flush()


def decide_hold(session: Session, principal: Principal, visit_id: int, allow: bool, note: str) -> Visit:
    visit = get_visit(session, principal, visit_id)
    require_desk(principal, visit.site_id)
    if visit.status != VisitStatus.held:
        raise Conflict("not_held", f"this visit is {visit.status}, not held for a decision")
    visitor = session.get(Visitor, visit.visitor_id)
    assert visitor is not None
    now = utcnow()
    if allow:
        _enter(session, visit, visitor, now)
    else:
        visit.status = VisitStatus.denied.value
        session.add(visit)
        _revoke_credentials(session, visit, now)
        session.flush()
    audit.record(
        session,
        principal.actor,
        "visit.hold_decided",
        "visit",
        visit.id,
        allow=allow,
        note=note,
        visitor_user_id=visitor.user_id,
    )
    return visit


def walk_in(session: Session, principal: Principal, data: WalkInIn) -> tuple[Visit, str]:
    site = site_by_key(session, data.site)
    site_id = ident(site)
    require_desk(principal, site_id)
    host = session.get(User, data.host_id)
    if (
        host is None
        or not host.is_active
        or not (_is_resident(session, data.host_id, site_id) or _staff_of(session, data.host_id, site_id))
    ):
        raise NotFound("host_not_found", f"no host {data.host_id} at this site", field="host_id")
    now = utcnow()
    end = data.end or now + timedelta(hours=WALK_IN_HOURS)
    if end <= now or end - now > timedelta(hours=24):
        raise Invalid("bad_end", "a walk-in leaves within 24 hours", field="end")
    door_ids = _pick_doors(session, principal.actor, site, data.host_id, data.doors, now, end)
    visitor = _new_visitor(session, site_id, data.visitor)
    visit = Visit(
        site_id=site_id,
        host_id=data.host_id,
        visitor_id=ident(visitor),
        start=now,
        end=end,
        purpose=data.purpose,
        door_ids=door_ids,
    )
    session.add(visit)
    session.flush()
    token = _issue_token(session, visit, visitor, policy_of(session, site_id))
    _admit(session, principal.actor, visit, visitor, now, how="walk_in")
    return visit, token


def check_out(session: Session, actor: Actor, visit: Visit, now: datetime, *, how: str) -> Visit:
    if visit.status != VisitStatus.checked_in:
        raise Conflict("not_on_site", f"this visit is {visit.status}, not checked in")
    visitor = session.get(Visitor, visit.visitor_id)
    assert visitor is not None
    visit.status = VisitStatus.checked_out.value
    visit.checked_out_at = now
    session.add(visit)
    _revoke_credentials(session, visit, now)
    session.flush()
    _door_access(session, visit, visitor, now, active=False)
    _event(session, visit, "departure", now)
    session.flush()
    audit.record(session, actor, "visit.check_out", "visit", visit.id, visitor_user_id=visitor.user_id, how=how)
    return visit


def desk_check_out(session: Session, principal: Principal, visit_id: int) -> Visit:
    visit = get_visit(session, principal, visit_id)
    require_desk(principal, visit.site_id)
    return check_out(session, principal.actor, visit, utcnow(), how="desk")


def cancel(session: Session, principal: Principal, visit_id: int) -> Visit:
    """The host or reception revokes a visit: its code dies, its door access ends at once."""
    visit = get_visit(session, principal, visit_id)
    if visit.status not in OPEN:
        raise Conflict("visit_over", f"this visit is already {visit.status}")
    visitor = session.get(Visitor, visit.visitor_id)
    assert visitor is not None
    now = utcnow()
    was_in = visit.status == VisitStatus.checked_in
    visit.status = VisitStatus.cancelled.value
    session.add(visit)
    _revoke_credentials(session, visit, now)
    session.flush()
    if was_in:
        visit.checked_out_at = now
        _door_access(session, visit, visitor, now, active=False)
        _event(session, visit, "departure", now)
    session.flush()
    audit.record(session, principal.actor, "visit.cancel", "visit", visit.id, visitor_user_id=visitor.user_id)
    return visit


def give_badge(session: Session, principal: Principal, visit_id: int, value: str) -> Credential:
    """A day badge from the desk: valid for this visit only, taken back at check-out."""
    visit = get_visit(session, principal, visit_id)
    require_desk(principal, visit.site_id)
    if visit.status not in OPEN:
        raise Conflict("visit_over", f"this visit is already {visit.status}")
    visitor = session.get(Visitor, visit.visitor_id)
    assert visitor is not None
    try:
        card = canonical_card("uid", value)
    except ValueError as exc:
        raise Invalid("bad_badge", str(exc), field="value") from None
    policy = policy_of(session, visit.site_id)
    now = utcnow()
    if visit.badge_credential_id is not None:
        old = session.get(Credential, visit.badge_credential_id)
        if old is not None and old.revoked_at is None:
            old.revoked_at = now
            session.add(old)
            note_credential(session, ident(old))
    cred = Credential(
        user_id=visitor.user_id,
        kind="badge",
        format="uid",
        value=card,
        compact=compact_hex(card),
        label=f"day badge, visit {visit.id}",
        valid_from=min(now, visit.start),
        valid_until=max(visit.end, now) + timedelta(minutes=policy.release_minutes),
    )
    try:
        with session.begin_nested():
            session.add(cred)
            session.flush()
    except IntegrityError:
        raise Conflict("credential_taken", "this badge is already registered", field="value") from None
    visit.badge_credential_id = ident(cred)
    session.add(visit)
    note_credential(session, ident(cred))
    replan_user(session, visitor.user_id, now)
    audit.record(
        session, principal.actor, "visit.badge", "visit", visit.id, visitor_user_id=visitor.user_id, credential=cred.id
    )
    return cred


# ---------------------------------------------------------------- reading


def public(session: Session, visits: list[Visit]) -> list[VisitPublic]:
    if not visits:
        return []
    visitors = {
        v.id: v for v in session.exec(select(Visitor).where(col(Visitor.id).in_({x.visitor_id for x in visits}))).all()
    }
    hosts = {u.id: u for u in session.exec(select(User).where(col(User.id).in_({x.host_id for x in visits}))).all()}
    sites = {s.id: s.key for s in session.exec(select(Site).where(col(Site.id).in_({x.site_id for x in visits}))).all()}
    doors = _door_keys(session, {d for x in visits for d in x.door_ids})
    out = []
    for x in visits:
        v = visitors[x.visitor_id]
        out.append(
            VisitPublic(
                id=ident(x),
                site=sites[x.site_id],
                host_id=x.host_id,
                host_name=hosts[x.host_id].name if x.host_id in hosts else "",
                visitor=VisitorPublic(
                    id=ident(v), user_id=v.user_id, name=v.name, email=v.email, phone=v.phone, company=v.company
                ),
                start=x.start,
                end=x.end,
                purpose=x.purpose,
                doors=[doors[d] for d in x.door_ids if d in doors],
                status=x.status,
                hold_reason=x.hold_reason,
                series_id=x.series_id,
                checked_in_at=x.checked_in_at,
                checked_out_at=x.checked_out_at,
                qr_svg=f"/api/v1/visits/{x.id}/qr.svg",
                qr_png=f"/api/v1/visits/{x.id}/qr.png",
            )
        )
    return out


def list_visits(
    session: Session,
    principal: Principal,
    *,
    site_key: str | None,
    day: date | None,
    status: str | None,
    q: str | None,
    limit: int,
) -> list[Visit]:
    """Reception: its sites' visits; everyone else: the visits they host."""
    stmt = select(Visit)
    site = site_by_key(session, site_key) if site_key else None
    if site is not None:
        stmt = stmt.where(col(Visit.site_id) == site.id)
    if not principal.admin:
        stmt = stmt.where(
            or_(col(Visit.site_id).in_(principal.reception_sites), col(Visit.host_id) == principal.user_id)
        )
    if day is not None:
        zone = ZoneInfo(site.timezone) if site else UTC
        lo = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        hi = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
        stmt = stmt.where(col(Visit.start) < hi, col(Visit.end) > lo)
    if status is not None:
        stmt = stmt.where(col(Visit.status) == status)
    rows = list(session.exec(stmt.order_by(col(Visit.start), col(Visit.id)).limit(limit if not q else 5000)).all())
    if q:
        needle = normalise_name(q) or ""
        visitors = {
            v.id: v
            for v in session.exec(select(Visitor).where(col(Visitor.id).in_({r.visitor_id for r in rows}))).all()
        }
        hosts = {u.id: u for u in session.exec(select(User).where(col(User.id).in_({r.host_id for r in rows}))).all()}

        def hit(r: Visit) -> bool:
            v = visitors.get(r.visitor_id)
            h = hosts.get(r.host_id)
            text = " ".join(filter(None, [v.name if v else "", v.company if v else "", h.name if h else ""]))
            return needle in (normalise_name(text) or "")

        rows = [r for r in rows if hit(r)][:limit]
    return rows


def today(session: Session, principal: Principal, site: Site, q: str | None = None) -> list[Visit]:
    require_desk(principal, ident(site))
    day = utcnow().astimezone(ZoneInfo(site.timezone)).date()
    rows = list_visits(session, principal, site_key=site.key, day=day, status=None, q=q, limit=500)
    return [r for r in rows if r.status in OPEN or r.status == VisitStatus.checked_out]


def on_site(session: Session, principal: Principal, site: Site) -> list[Visit]:
    require_desk(principal, ident(site))
    return list(
        session.exec(
            select(Visit)
            .where(col(Visit.site_id) == site.id, col(Visit.status) == VisitStatus.checked_in.value)
            .order_by(col(Visit.checked_in_at))
        ).all()
    )


def roll_call(session: Session, principal: Principal, site: Site, now: datetime | None = None) -> dict[str, Any]:
    """Everyone inside for an evacuation: checked-in visitors, and residents and staff whose
    latest door event of the last 24 hours let them in (controllers here report no direction, so
    a granted entry counts as being in), grouped by the door they came through."""
    require_desk(principal, ident(site))
    now = now or utcnow()
    doors = {ident(d): d for d in session.exec(select(Door).where(col(Door.site_id) == site.id)).all()}
    groups: dict[str, list[dict[str, Any]]] = {}
    visits = on_site(session, principal, site)
    visitor_users: set[int] = set()
    if visits:
        visitors = {
            v.id: v
            for v in session.exec(select(Visitor).where(col(Visitor.id).in_({x.visitor_id for x in visits}))).all()
        }
        hosts = {
            u.id: u.name for u in session.exec(select(User).where(col(User.id).in_({x.host_id for x in visits}))).all()
        }
        for x in visits:
            v = visitors[x.visitor_id]
            visitor_users.add(v.user_id)
            groups.setdefault("Reception", []).append(
                {
                    "name": v.name,
                    "kind": "visitor",
                    "detail": f"host: {hosts.get(x.host_id, '')}",
                    "since": x.checked_in_at,
                }
            )
    if doors:
        events = session.exec(
            select(AccessEvent)
            .where(
                col(AccessEvent.door_id).in_(list(doors)),
                col(AccessEvent.at) >= now - timedelta(hours=24),
                col(AccessEvent.user_id).is_not(None),
            )
            .order_by(col(AccessEvent.at).desc(), col(AccessEvent.id).desc())
            .limit(20000)
        ).all()
        latest: dict[int, AccessEvent] = {}
        for e in events:
            if e.user_id is not None and e.user_id not in latest:
                latest[e.user_id] = e
        inside = {uid: e for uid, e in latest.items() if e.kind == "granted" and uid not in visitor_users}
        if inside:
            people = {u.id: u for u in session.exec(select(User).where(col(User.id).in_(list(inside)))).all()}
            for uid, e in inside.items():
                user = people.get(uid)
                if user is None or user.email.endswith("@" + PSEUDONYM_DOMAIN):
                    continue
                door = doors.get(e.door_id or 0)
                groups.setdefault(door.name if door else "?", []).append(
                    {"name": user.name, "kind": "resident", "detail": user.unit or "", "since": e.at}
                )
    ordered = sorted(groups.items(), key=lambda kv: (kv[0] != "Reception", kv[0]))
    return {
        "site": site.key,
        "at": now,
        "total": sum(len(p) for _, p in ordered),
        "groups": [{"entrance": k, "people": sorted(p, key=lambda x: x["name"].casefold())} for k, p in ordered],
    }


# ---------------------------------------------------------------- deny list and policy


def add_deny(session: Session, principal: Principal, data: DenyIn) -> DenyEntry:
    site = site_by_key(session, data.site)
    require_desk(principal, ident(site))
    entry = DenyEntry(
        site_id=ident(site),
        name_norm=normalise_name(data.name),
        email_norm=normalise_email(str(data.email) if data.email else None),
        phone_norm=normalise_phone(data.phone),
        reason=data.reason,
    )
    session.add(entry)
    session.flush()
    audit.record(session, principal.actor, "visit.deny_add", "visitor_deny", entry.id, site_id=site.id)
    return entry


def remove_deny(session: Session, principal: Principal, entry_id: int) -> None:
    entry = session.get(DenyEntry, entry_id)
    if entry is None or not principal.at_reception(entry.site_id):
        raise NotFound("deny_entry_not_found", f"no deny-list entry {entry_id}")
    session.delete(entry)
    session.flush()
    audit.record(session, principal.actor, "visit.deny_remove", "visitor_deny", entry_id, site_id=entry.site_id)


def list_deny(session: Session, principal: Principal, site: Site) -> list[DenyEntry]:
    require_desk(principal, ident(site))
    return list(
        session.exec(select(DenyEntry).where(col(DenyEntry.site_id) == site.id).order_by(col(DenyEntry.id))).all()
    )


def set_policy(session: Session, principal: Principal, site_key: str, data: PolicyIn) -> VisitorPolicy:
    if not principal.admin:
        raise Forbidden("forbidden_role", "visitor policies are set by admins")
    site = site_by_key(session, site_key)
    row = session.get(VisitorPolicy, site.id) or VisitorPolicy(site_id=ident(site))
    before = row.model_dump(exclude={"site_id"})
    for k, v in data.model_dump().items():
        setattr(row, k, v)
    session.add(row)
    session.flush()
    audit.record(session, principal.actor, "visit.policy", "site", site.id, before=before, after=data.model_dump())
    return row


# ---------------------------------------------------------------- sweeps (jobs)


def closing_instant(policy: VisitorPolicy, zone: ZoneInfo, checked_in_at: datetime) -> datetime | None:
    """The first closing time after a check-in, in the site's local wall-clock time."""
    if not policy.closing_time:
        return None
    hh, mm = (int(p) for p in policy.closing_time.split(":"))
    local = checked_in_at.astimezone(zone)
    closing = datetime.combine(local.date(), time(hh, mm), tzinfo=zone)
    if closing <= local:
        closing = datetime.combine(local.date() + timedelta(days=1), time(hh, mm), tzinfo=zone)
    return closing.astimezone(UTC)


def auto_check_out(session: Session, now: datetime, *, after_id: int = 0, batch: int = 200) -> tuple[int, int | None]:
    """Check out whoever is past the site's closing time or N hours after check-in; tell reception
    who was still on site at closing (one outbox message per site and batch). Walks visits in id
    order: returns how many it checked out and the last id it looked at (None: the end)."""
    rows = session.exec(
        select(Visit)
        .where(col(Visit.status) == VisitStatus.checked_in.value, col(Visit.id) > after_id)
        .order_by(col(Visit.id))
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    done = 0
    at_closing: dict[int, list[dict[str, Any]]] = {}
    sites: dict[int, tuple[VisitorPolicy, ZoneInfo]] = {}
    for visit in rows:
        if visit.site_id not in sites:
            sites[visit.site_id] = (
                policy_of(session, visit.site_id),
                ZoneInfo(_site_name(session, visit.site_id).timezone),
            )
        policy, zone = sites[visit.site_id]
        checked_in = visit.checked_in_at or visit.start
        closing = closing_instant(policy, zone, checked_in)
        limit = checked_in + timedelta(hours=policy.auto_checkout_hours) if policy.auto_checkout_hours else None
        due = [t for t in (closing, limit) if t is not None and t <= now]
        if not due:
            continue
        check_out(session, audit.SYSTEM, visit, now, how="closing" if closing in due else "after_hours")
        done += 1
        if closing in due:
            visitor = session.get(Visitor, visit.visitor_id)
            at_closing.setdefault(visit.site_id, []).append(
                {
                    "visit_id": visit.id,
                    "visitor_name": visitor.name if visitor else "",
                    "checked_in_at": checked_in.isoformat(),
                }
            )
    for site_id, people in at_closing.items():
        site = _site_name(session, site_id)
        outbox.enqueue(
            session,
            "visit.on_site_at_closing",
            {
                "site": site.name,
                "site_key": site.key,
                "to_role": "reception",
                "visitors": people,
                "at": now.isoformat(),
            },
        )
    return done, (rows[-1].id if len(rows) == batch else None)


def mark_no_shows(session: Session, now: datetime, *, batch: int = 200) -> int:
    """Invitations whose window and margin are over: no-show, their code dies."""
    rows = session.exec(
        select(Visit)
        .where(col(Visit.status) == VisitStatus.invited.value, col(Visit.end) < now)
        .order_by(col(Visit.end))
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    n = 0
    for visit in rows:
        if now <= visit.end + timedelta(minutes=policy_of(session, visit.site_id).margin_minutes):
            continue
        visit.status = VisitStatus.no_show.value
        session.add(visit)
        _revoke_credentials(session, visit, now)
        n += 1
    session.flush()
    return n


def purge(session: Session, now: datetime, *, dry_run: bool, actor: Actor = audit.SYSTEM) -> list[dict[str, Any]]:
    """Empty the personal data of visitors whose last visit ended more than the site's retention
    period ago. The pseudonymous door identity and the audit trail stay: they hold no name."""
    candidates = session.exec(select(Visitor).where(col(Visitor.purged_at).is_(None)).order_by(col(Visitor.id))).all()
    out: list[dict[str, Any]] = []
    sites = {s.id: s for s in session.exec(select(Site)).all()}
    for v in candidates:
        visits = session.exec(select(Visit).where(col(Visit.visitor_id) == v.id)).all()
        if any(x.status in OPEN for x in visits):
            continue
        last = max((x.checked_out_at or x.end for x in visits), default=v.created_at)
        keep_days = policy_of(session, v.site_id).retention_days
        if last > now - timedelta(days=keep_days):
            continue
        out.append({"visitor_id": v.id, "user_id": v.user_id, "site": sites[v.site_id].key, "last_visit": last.date()})
        if dry_run:
            continue
        v.name, v.email, v.phone, v.company, v.note = "", None, None, None, None
        v.name_norm = v.email_norm = v.phone_norm = None
        v.purged_at = now
        session.add(v)
        for x in visits:
            x.purpose, x.hold_reason, x.token_nonce = "", None, None
            session.add(x)
            _revoke_credentials(session, x, now)
    session.flush()
    if out and not dry_run:
        audit.record(
            session,
            actor,
            "vms.purge",
            "visitor",
            len(out),
            visitor_users=[o["user_id"] for o in out[:500]],
            count=len(out),
        )
    return out

"""Admins' pages: users and their roles (invite, disable, reset a password), their credentials
(badges, PINs, QR codes), sites (import a site file, every error listed as `path.to.field:
reason`), controllers with their live state, and what is kept how long.

Each form calls the service the API calls (`core.auth`, `access.service`) in one unit of work, so
the rules, the audit trail and the object-level checks are the same. A password or a PIN made here
is shown once, on the answer to the form, and never again (only its hash or its sealed form is
stored).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session, col, func, select
from starlette.concurrency import run_in_threadpool

from access import service as access_service
from access.decisions import KEEP_CHANGES
from access.models import Controller, Door
from config.site import SiteFileError
from core import auth
from core.auth import Principal, RoleIn, UserCreate, UserUpdate
from core.db import ident, open_session
from core.deps import EngineDep
from core.errors import Invalid
from core.i18n import N_
from core.models import Role, Site, User, Venue
from core.security import hashing_for
from portal.layout import NAV, NavItem, check_origin
from portal.manager import attempt, done, guard, notice, page, problems, zone
from vms import service as vms_service
from vms.schemas import PolicyIn

router = APIRouter(include_in_schema=False)

NAV.append(NavItem("/admin", N_("Administration"), (Role.admin.value,)))

MAX_SITE_FILE = 1_000_000
PAGE_SIZE = 50
USER_DONE = {
    "disabled": N_("The account is disabled; its sessions and API keys are revoked."),
    "enabled": N_("The account is enabled again."),
    "roles": N_("The roles are saved."),
    "revoked": N_("The credential is revoked."),
}


def _admin(request: Request, engine: Any) -> Principal | Response:
    return guard(request, engine, Role.admin)


def temporary_password() -> str:
    """A one-time password for a new or reset account: 16 random URL-safe characters."""
    return secrets.token_urlsafe(12)


@router.get("/admin", response_class=HTMLResponse)
def admin_index(request: Request, engine: EngineDep) -> Response:
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    with open_session(engine) as s:
        counts = {
            "users": s.exec(select(func.count()).select_from(User)).one(),
            "sites": s.exec(select(func.count()).select_from(Site)).one(),
            "controllers": s.exec(select(func.count()).select_from(Controller).where(Controller.active)).one(),
        }
    return page(request, "admin_index.html", principal, counts=counts)


# ---------------------------------------------------------------- users


def _scopes(s: Session) -> tuple[list[Site], list[Venue]]:
    return list(s.exec(select(Site).order_by(col(Site.key))).all()), list(
        s.exec(select(Venue).order_by(col(Venue.key))).all()
    )


def _role_in(role: str, scope: str) -> RoleIn:
    """The role form's one scope field: a site key for residents and reception, a venue key for managers."""
    if role == Role.venue_manager.value:
        return RoleIn.model_validate({"role": role, "venue": scope or None})
    if role == Role.admin.value:
        return RoleIn.model_validate({"role": role})
    return RoleIn.model_validate({"role": role, "site": scope or None})


def _users_page(
    request: Request, engine: Any, principal: Principal, q: str = "", offset: int = 0, **ctx: Any
) -> Response:
    with open_session(engine) as s:
        stmt = select(User).order_by(col(User.id)).offset(offset).limit(PAGE_SIZE + 1)
        if q:
            like = f"%{q.lower()}%"
            stmt = stmt.where(col(User.email).like(like) | col(User.name).ilike(like))
        rows = list(s.exec(stmt).all())
        users = [auth.user_public(s, u) for u in rows[:PAGE_SIZE]]
        sites, venues = _scopes(s)
    return page(
        request,
        "admin_users.html",
        principal,
        status=ctx.pop("status", 200),
        users=users,
        q=q,
        offset=offset,
        more=len(rows) > PAGE_SIZE,
        page_size=PAGE_SIZE,
        sites=sites,
        venues=venues,
        roles=[r.value for r in Role],
        errors=ctx.pop("errors", []),
        form=ctx.pop("form", {}),
        **ctx,
    )


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(
    request: Request,
    engine: EngineDep,
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    return _users_page(request, engine, principal, q, offset)


@router.post("/admin/users")
def invite(
    request: Request,
    engine: EngineDep,
    email: Annotated[str, Form(max_length=254)],
    name: Annotated[str, Form(max_length=200)],
    role: Annotated[str, Form(max_length=20)] = "",
    scope: Annotated[str, Form(max_length=63)] = "",
    unit: Annotated[str, Form(max_length=60)] = "",
    locale: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    """Create the account with a one-time password, shown to the admin once, to hand over."""
    check_origin(request)
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    password = temporary_password()
    hashing = hashing_for(request.app.state.settings)

    def work(s: Session) -> int:
        data = UserCreate(
            email=email,
            name=name,
            unit=unit or None,
            **({"locale": locale} if locale else {}),  # none: the user has not chosen yet
            password=password,
            roles=[_role_in(role, scope)] if role else [],
        )
        return auth.create_user(s, principal.actor, data, hashing).id or 0

    user_id, errors, status = attempt(engine, work)
    if errors:
        form = {"email": email, "name": name, "role": role, "scope": scope, "unit": unit, "locale": locale}
        return _users_page(request, engine, principal, errors=errors, form=form, status=status)
    return _user_page(request, engine, principal, user_id, password=password, status=201)


def _user_page(request: Request, engine: Any, principal: Principal, user_id: int, **ctx: Any) -> Response:
    with open_session(engine) as s:
        user = auth.user_public(s, auth.get_user(s, user_id))  # 404 for an unknown id
        creds = [access_service.credential_public(c) for c in access_service.list_credentials(s, principal, user_id)]
        sites, venues = _scopes(s)
        tz = zone(sites[0].timezone) if sites else zone("UTC")
    return page(
        request,
        "admin_user.html",
        principal,
        status=ctx.pop("status", 200),
        user=user,
        creds=creds,
        sites=sites,
        venues=venues,
        roles=[r.value for r in Role],
        tz=tz,
        errors=ctx.pop("errors", []),
        notice=ctx.pop("notice", None) or notice(request, USER_DONE, principal),
        **ctx,
    )


@router.get("/admin/users/{user_id}", response_class=HTMLResponse)
def user_page(request: Request, engine: EngineDep, user_id: int) -> Response:
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    return _user_page(request, engine, principal, user_id)


def _update(
    request: Request, engine: Any, user_id: int, build: Callable[[Session], UserUpdate], what: str, **shown: Any
) -> Response:
    check_origin(request)
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    hashing = hashing_for(request.app.state.settings)

    def work(s: Session) -> Any:
        return auth.update_user(s, principal.actor, user_id, build(s), hashing)

    _, errors, status = attempt(engine, work)
    if errors:
        return _user_page(request, engine, principal, user_id, errors=errors, status=status)
    if shown:
        return _user_page(request, engine, principal, user_id, **shown)
    return done(f"/admin/users/{user_id}", what)


@router.post("/admin/users/{user_id}/active")
def set_active(
    request: Request, engine: EngineDep, user_id: int, active: Annotated[str, Form(max_length=5)]
) -> Response:
    """Disabling revokes the account's sessions and API keys at once (`core.auth.update_user`)."""
    on = active == "true"
    return _update(request, engine, user_id, lambda _s: UserUpdate(is_active=on), "enabled" if on else "disabled")


@router.post("/admin/users/{user_id}/password")
def reset_password(request: Request, engine: EngineDep, user_id: int) -> Response:
    """A new one-time password, shown once; the account's sessions end."""
    password = temporary_password()
    return _update(request, engine, user_id, lambda _s: UserUpdate(password=password), "password", password=password)


def _roles_of(s: Session, user_id: int) -> list[RoleIn]:
    return [
        RoleIn.model_validate(r.model_dump(exclude_none=True))
        for r in auth.user_public(s, auth.get_user(s, user_id)).roles
    ]


@router.post("/admin/users/{user_id}/roles")
def add_role(
    request: Request,
    engine: EngineDep,
    user_id: int,
    role: Annotated[str, Form(max_length=20)],
    scope: Annotated[str, Form(max_length=63)] = "",
) -> Response:
    return _update(
        request, engine, user_id, lambda s: UserUpdate(roles=[*_roles_of(s, user_id), _role_in(role, scope)]), "roles"
    )


@router.post("/admin/users/{user_id}/roles/{index}/remove")
def remove_role(request: Request, engine: EngineDep, user_id: int, index: int) -> Response:
    def build(s: Session) -> UserUpdate:
        roles = _roles_of(s, user_id)
        if not 0 <= index < len(roles):
            raise Invalid("role_not_found", "no such role of this user", field="roles")
        return UserUpdate(roles=[r for i, r in enumerate(roles) if i != index])

    return _update(request, engine, user_id, build, "roles")


# ---------------------------------------------------------------- credentials


@router.post("/admin/users/{user_id}/credentials")
def add_credential(
    request: Request,
    engine: EngineDep,
    user_id: int,
    kind: Annotated[str, Form(max_length=10)],
    value: Annotated[str, Form(max_length=128)] = "",
    card_format: Annotated[str, Form(alias="format", max_length=10)] = "",
    label: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """A badge takes the card's number; a PIN or a QR code left empty is drawn at random and shown once."""
    check_origin(request)
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    shown = value
    if not value and kind == "pin":
        shown = f"{secrets.randbelow(10**6):06d}"
    elif not value and kind == "qr":
        shown = secrets.token_urlsafe(24)

    def work(s: Session) -> Any:
        data = access_service.CredentialCreate.model_validate(
            {"kind": kind, "value": shown, "label": label, **({"format": card_format} if card_format else {})}
        )
        return access_service.add_credential(s, principal, user_id, data)

    _, errors, status = attempt(engine, work)
    if errors:
        return _user_page(request, engine, principal, user_id, errors=errors, status=status)
    secret = shown if kind in ("pin", "qr") and not value else None
    return _user_page(request, engine, principal, user_id, issued=(kind, secret), status=201)


@router.post("/admin/users/{user_id}/credentials/{credential_id}/revoke")
def revoke_credential(request: Request, engine: EngineDep, user_id: int, credential_id: int) -> Response:
    check_origin(request)
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    _, errors, status = attempt(
        engine, lambda s: access_service.revoke_credential(s, principal, user_id, credential_id)
    )
    if errors:
        return _user_page(request, engine, principal, user_id, errors=errors, status=status)
    return done(f"/admin/users/{user_id}", "revoked")


# ---------------------------------------------------------------- sites


def _sites_page(request: Request, engine: Any, principal: Principal, **ctx: Any) -> Response:
    with open_session(engine) as s:
        sites, venues = _scopes(s)
        doors = dict(s.exec(select(Door.site_id, func.count()).where(Door.active).group_by(col(Door.site_id))).all())
    return page(
        request,
        "admin_sites.html",
        principal,
        status=ctx.pop("status", 200),
        sites=sites,
        venues=venues,
        doors=doors,
        errors=ctx.pop("errors", []),
        **ctx,
    )


@router.get("/admin/sites", response_class=HTMLResponse)
def sites_page(request: Request, engine: EngineDep) -> Response:
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    return _sites_page(request, engine, principal)


@router.post("/admin/sites")
async def import_site(request: Request, engine: EngineDep, file: Annotated[UploadFile, File()]) -> Response:
    """The site file import of the API (`app.state.site_import`, lent by the composition root):
    refused whole with every error as `path.to.field: reason`, or applied whole."""
    check_origin(request)
    principal = await run_in_threadpool(_admin, request, engine)
    if not isinstance(principal, Principal):
        return principal
    raw = await file.read(MAX_SITE_FILE + 1)
    importer = getattr(request.app.state, "site_import", None)

    def run() -> Response:
        if len(raw) > MAX_SITE_FILE:
            return _sites_page(
                request, engine, principal, errors=[f"(file): larger than {MAX_SITE_FILE} bytes"], status=413
            )
        if importer is None:
            return _sites_page(
                request, engine, principal, errors=["(file): this server cannot import site files"], status=503
            )
        try:
            report = importer(raw, principal.actor, source=file.filename or "portal")
        except SiteFileError as exc:
            return _sites_page(request, engine, principal, errors=list(exc.errors), status=422)
        except Exception as exc:  # an AppError or a validation error of the import itself
            return _sites_page(request, engine, principal, errors=problems(exc), status=getattr(exc, "status", 422))
        return _sites_page(request, engine, principal, report=report)

    return await run_in_threadpool(run)


# ---------------------------------------------------------------- controllers, retention


@router.get("/admin/controllers", response_class=HTMLResponse)
def controllers_page(request: Request, engine: EngineDep) -> Response:
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    with open_session(engine) as s:
        controllers = list(s.exec(select(Controller).order_by(col(Controller.key))).all())
        doors = dict(
            s.exec(select(Door.controller_id, func.count()).where(Door.active).group_by(col(Door.controller_id))).all()
        )
        sites = {x.id: x for x in s.exec(select(Site)).all()}
    return page(
        request, "admin_controllers.html", principal, controllers=controllers, doors=doors, sites=sites, zone=zone
    )


def _retention_page(request: Request, engine: Any, principal: Principal, **ctx: Any) -> Response:
    settings = request.app.state.settings
    with open_session(engine) as s:
        sites = [(x, vms_service.policy_of(s, ident(x)).retention_days) for x in _scopes(s)[0]]
    return page(
        request,
        "admin_retention.html",
        principal,
        status=ctx.pop("status", 200),
        sites=sites,
        change_log_hours=int(KEEP_CHANGES.total_seconds() // 3600),
        session_hours=round(settings.session_ttl_minutes / 60, 1),
        login_window_minutes=settings.login_window_seconds // 60,
        errors=ctx.pop("errors", []),
        notice=notice(request, {"saved": N_("The retention period is saved.")}, principal),
        **ctx,
    )


@router.get("/admin/retention", response_class=HTMLResponse)
def retention_page(request: Request, engine: EngineDep) -> Response:
    """What is kept, and for how long: the visitors' retention period per site (the one setting
    there is, `vms.service.set_policy`), and the fixed periods of the code."""
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal
    return _retention_page(request, engine, principal)


@router.post("/admin/retention/{site_key}")
def set_retention(
    request: Request, engine: EngineDep, site_key: str, retention_days: Annotated[str, Form(max_length=6)]
) -> Response:
    """The site's visitor policy with a new retention period, its other settings as they are."""
    check_origin(request)
    principal = _admin(request, engine)
    if not isinstance(principal, Principal):
        return principal

    def work(s: Session) -> Any:
        site = vms_service.site_by_key(s, site_key)
        current = vms_service.policy_of(s, ident(site)).model_dump(exclude={"site_id"})
        data = PolicyIn.model_validate({**current, "retention_days": retention_days})
        return vms_service.set_policy(s, principal, site_key, data)

    _, errors, status = attempt(engine, work)
    if errors:
        return _retention_page(request, engine, principal, errors=errors, status=status)
    return done("/admin/retention", "saved")

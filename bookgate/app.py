"""The application factory: the composition root that mounts every package's routers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from access import api as access_api
from access import events as access_events
from access.decisions import DecisionIndex, IndexKeeper
from bms import api as bms_api
from bms import service as bms_service
from bms import waitlist as bms_waitlist
from bookgate import __version__, migrate
from bookgate.routes import sites as site_routes
from bookgate.routes.sites import MAX_SITE_FILE
from bookgate.workers import NodeServices
from config import Settings, get_settings
from core import audit
from core.db import make_engine
from core.deps import SecurityHeaders
from core.errors import ERROR_RESPONSES, install_error_handlers
from core.limits import BodyLimit
from core.routes import auth as auth_routes
from core.routes import users as user_routes
from moderation import api as moderation_api
from moderation import policy as moderation_policy
from moderation.documents import MAX_BYTES as DOCUMENT_MAX_BYTES
from notify import api as notify_api
from portal import errors as portal_errors
from portal import router as portal_router
from vms import api as vms_api
from vms.events import VisitFeed

log = logging.getLogger("bookgate")


def entry_listeners() -> access_events.EntryListeners:
    """Who hears of a granted entry: bms checks the reservation in on its first one."""
    return access_events.EntryListeners({"reservation": bms_service.check_in_on_entry})


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    migrate_on_start: bool = True,
    leader_lock: Path | None = None,
) -> FastAPI:
    """``leader_lock``: this app is one of several worker processes of a node; the one holding
    that lock runs the drivers, the clock and delivery (bookgate.workers)."""
    settings = settings or get_settings()
    if engine is None:
        if settings.effective_database_url.startswith("sqlite"):
            settings.ensure_var_dir()
        engine = make_engine(
            settings.effective_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate_on_start:
            migrate.upgrade(engine)
        # Everything loaded so far lives as long as the process: keep it out of the collector's
        # full passes, which otherwise add tens of milliseconds to the slowest requests.
        gc.collect()
        gc.freeze()
        # Drivers, clock and dispatcher, outbox delivery: once per node (bookgate.workers); with
        # several workers, their engine listeners go in first, before any of our threads runs.
        services = NodeServices(app, engine, settings, decisions, leader_lock)
        app.state.driver_host = None
        app.state.node_services = services
        services.install()
        # The signed audit checkpoint follows every commit that appends to the trail. Started before
        # any thread of ours opens a transaction: engine listeners must not be added under traffic.
        # (keyed like `audit.record` keys the rows it appends: from the process's settings)
        audit_keeper = audit.CheckpointKeeper(engine, settings.ensure_var_dir() / audit.CHECKPOINT_FILE)
        audit_keeper.start()
        keeper = IndexKeeper(engine, decisions, settings.decisions_refresh_seconds) if settings.scheduler else None
        if keeper is not None:
            keeper.start()
            gc.collect()
            gc.freeze()  # the index lives as long as the process, like the rest
        services.start()
        try:
            yield
        finally:
            services.stop()
            if keeper is not None:
                keeper.stop()
            audit_keeper.stop()

    # moderation's policies, passed to bms by the routes (bms.api.PoliciesDep): no module global
    booking_policies = bms_service.BookingPolicies(
        status=[moderation_policy.decide], change=[moderation_policy.hold_changes]
    )
    decisions = DecisionIndex()

    app = FastAPI(
        title="Bookgate",
        version=__version__,
        description="Shared-facility reservations, visitors and door access control.",
        lifespan=lifespan,
        # The API documentation is the portal's /docs page, from files served here (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.secret_key = settings.effective_secret_key()
    app.state.decisions = decisions
    app.state.booking_policies = booking_policies
    app.state.entry_listeners = entry_listeners()
    app.state.site_import = partial(site_routes.import_bytes, engine)  # the portal's site file upload
    app.state.visit_feed = VisitFeed(engine)  # the on-site board's live stream (vms.events)
    install_error_handlers(app)
    portal_errors.install(app)  # HTML error pages for browsers; the API keeps JSON
    app.add_middleware(
        BodyLimit,
        limits=[
            (r"/api/v1/moderation/(venues|resources)/[^/]+/documents", DOCUMENT_MAX_BYTES + 64 * 1024),
            (r"/api/v1/site-config", MAX_SITE_FILE + 1024),
            (r"/admin/sites", MAX_SITE_FILE + 64 * 1024),  # the portal's forms of the same uploads
            (r"/manage/(venues|resources)/[^/]+/documents", DOCUMENT_MAX_BYTES + 64 * 1024),
        ],
    )

    app.add_middleware(SecurityHeaders)  # outermost: nosniff and referrer policy on every response

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: the database answers and its schema is at the current migration."""
        checks: dict[str, str] = {}
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
            checks["migrations"] = "ok" if migrate.is_current(engine) else "behind"
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            checks["database"] = "unreachable"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
        )

    app.include_router(auth_routes.router, responses=ERROR_RESPONSES)
    app.include_router(user_routes.router, responses=ERROR_RESPONSES)
    app.include_router(site_routes.router, responses=ERROR_RESPONSES)
    app.include_router(bms_api.router, responses=ERROR_RESPONSES)
    app.include_router(moderation_api.router, responses=ERROR_RESPONSES)
    app.include_router(vms_api.router, responses=ERROR_RESPONSES)
    app.include_router(access_api.router, responses=ERROR_RESPONSES)
    app.include_router(notify_api.router, responses=ERROR_RESPONSES)
    app.include_router(bms_waitlist.router, responses=ERROR_RESPONSES)
    app.include_router(portal_router)
    return app

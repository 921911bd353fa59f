"""Server-rendered pages, one module per audience over the domains' services: `account`
(sign-in, everyone), `resident`, `manager` (managers and reception); `layout` holds what they
share (templates, the session cookie, rendering, origin checks)."""

from __future__ import annotations

from fastapi import APIRouter

from portal import account, manager, resident

router = APIRouter(include_in_schema=False)
for module in (account, resident, manager):
    router.include_router(module.router)

__all__ = ["router"]

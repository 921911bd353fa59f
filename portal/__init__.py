"""Server-rendered pages, one module per audience over the domains' services: `account` (sign-in,
language, profile, the API docs: everyone), `resident`, `manager` (venue managers and the doors
board), `admin`, `reports`, `reception`, `mailbox`; `layout` holds what they share (templates, the
session cookie, the navigation, rendering, guards) and `errors` the browsers' error pages.

A page module exposes `router`; add its name to `PAGE_MODULES` (a module not written yet is
skipped)."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

PAGE_MODULES = ("account", "resident", "manager", "admin", "reports", "reception", "mailbox", "waitlist", "webhooks")

router = APIRouter(include_in_schema=False)
for name in PAGE_MODULES:
    try:
        module = importlib.import_module(f"portal.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"portal.{name}":
            raise  # a module that exists but fails to import is a bug, not a missing page
        continue
    if hasattr(module, "router"):
        router.include_router(module.router)

__all__ = ["router"]

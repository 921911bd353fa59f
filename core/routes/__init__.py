"""The kernel's own API routers: sign-in and sessions, users and API keys."""

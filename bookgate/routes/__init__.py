"""The shell's own API routers (auth, users, API keys, health)."""

"""Serve the app on a given database in its own process (so the load generator has its own core);
`--workers N` runs it as `bookgate serve --workers N` does (bookgate.workers)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import uvicorn

from bookgate.app import create_app
from bookgate.workers import SETTINGS_ENV, serve_workers
from config import Settings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--database-url", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--var-dir", default="var/bench")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--secret-key", default="", help="several nodes of one database share it")
    args = p.parse_args()
    extra = {"secret_key": args.secret_key} if args.secret_key else {}
    settings = Settings(database_url=args.database_url, var_dir=Path(args.var_dir), _env_file=None, **extra)  # type: ignore[call-arg]
    if args.workers == 1:
        uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning", backlog=2048)
        return
    settings.effective_secret_key()  # the key file exists before the workers read it
    os.environ[SETTINGS_ENV] = json.dumps(settings.model_dump(mode="json"))
    serve_workers("127.0.0.1", args.port, args.workers, log_level="warning", backlog=2048)


if __name__ == "__main__":
    main()

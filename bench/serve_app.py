"""Serve the app on a given database in its own process (so the load generator has its own core)."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from bookgate.app import create_app
from config import Settings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--database-url", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--var-dir", default="var/bench")
    args = p.parse_args()
    settings = Settings(database_url=args.database_url, var_dir=Path(args.var_dir), _env_file=None)  # type: ignore[call-arg]
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning", backlog=2048)


if __name__ == "__main__":
    main()

import time, gc, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from bench.common import fresh_database
from bench import access_rig as rig
from bench.access_burst import write_windows
import schedules.dispatch as d
from bookgate.db import read_session
from sqlalchemy import update
from access.models import Transition
backend = sys.argv[1]
with fresh_database(backend, Path("var/bench")) as (url, engine):
    site = rig.populate_site(engine, 1000, "x/y")
    holders = rig.add_badge_holders(engine, 5000)
    due = datetime.now(UTC) + timedelta(seconds=2)
    write_windows(engine, site, holders, due, 250)
    time.sleep(2)
    for mode in ["plain", "freeze", "disabled", "plain"]:
        if mode == "freeze": gc.collect(); gc.freeze()
        if mode == "disabled": gc.disable()
        with engine.begin() as c: c.execute(update(Transition).values(claimed_until=None, claimed_by=None))
        now = datetime.now(UTC)
        t=time.perf_counter(); batch = d.claim_due(engine, "w", now, limit=500); t1=time.perf_counter()
        with read_session(engine) as s: cmds = d.commands_for(s, batch, now)
        t2=time.perf_counter()
        print(mode, "claim %.0f ms commands %.0f ms" % ((t1-t)*1000, (t2-t1)*1000), gc.get_count())
        gc.enable()

import time
from pathlib import Path
from bench.common import fresh_database
from bench import access_rig as rig
from sqlalchemy import text
tally = rig.install_tally()
for backend in ["sqlite", "postgresql"]:
    with fresh_database(backend, Path("var/bench")) as (url, engine):
        prefix = rig.new_prefix()
        t = time.perf_counter(); site = rig.populate_site(engine, 1000, prefix); print(backend, "site", time.perf_counter()-t)
        t = time.perf_counter(); h = rig.add_badge_holders(engine, 5000); print("holders", time.perf_counter()-t, h[:2])
        t = time.perf_counter()
        with rig.fleet(rig.MQTT_URL, prefix, 1000) as f:
            print("fleet up", time.perf_counter()-t)
            try:
                host, storm = rig.start_host(engine, rig.MQTT_URL, 1000, timeout=60)
                print("storm", storm)
            except Exception as e:
                print("ERR", e)
                with engine.connect() as c: print(c.execute(text("select state, last_sync is null, count(*) from controller group by 1,2")).all())
                host=None
            d = f.dump(); print(len(d), sum(len(v["receipts"]) for v in d.values()))
            with engine.connect() as c: print(c.execute(text("select state, last_sync is null, count(*) from controller group by 1,2")).all())
            if host: host.stop()
        print("closed", time.perf_counter()-t)
        print(tally.report()); tally.counts.clear()

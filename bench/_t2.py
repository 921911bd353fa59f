import time, cProfile, pstats
from pathlib import Path
from bench.common import fresh_database
from bench import access_rig as rig
from access.supervision import full_sync, set_state
from access.protocol import FullSync
from bookgate.db import read_session, write_session, utcnow
tally = rig.install_tally()
backend = __import__("sys").argv[1]
with fresh_database(backend, Path("var/bench")) as (url, engine):
    prefix = rig.new_prefix()
    site = rig.populate_site(engine, 1000, prefix)
    with rig.fleet(rig.MQTT_URL, prefix, 1000) as f:
        from bookgate.controllers import start_esprfid
        # host without fleet avty: use a different prefix? just start and time pieces
        host = start_esprfid(engine, rig.MQTT_URL)
        time.sleep(70)
        keys = site.controller_keys[:50]
        a=b=c=0
        for k in keys:
            t0=time.perf_counter()
            with read_session(engine) as s: cmd = full_sync(s, k, utcnow())
            t1=time.perf_counter()
            r = host.send(k, cmd)
            t2=time.perf_counter()
            with write_session(engine) as s: set_state(s, k, "online", utcnow(), synced=True)
            t3=time.perf_counter()
            a+=t1-t0; b+=t2-t1; c+=t3-t2
        print("per resync ms: full_sync %.1f send %.1f set_state %.1f" % (a*20, b*20, c*20))
        pr = cProfile.Profile(); pr.enable()
        for k in keys[:20]: host.resync(k)
        pr.disable(); pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
        host.stop()
print(tally.report())

import socket, threading, time, statistics, secrets, sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
nodelay = sys.argv[1] == "1"
qos = int(sys.argv[2])
P = "bgbench/" + secrets.token_hex(4)
def mk(name):
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=name + secrets.token_hex(3), protocol=mqtt.MQTTv311)
    if nodelay:
        def on_open(client, userdata, sock):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.on_socket_open = on_open
    return c
resp = mk("r"); req = mk("q")
ready = threading.Event(); got = threading.Event()
resp.on_connect = lambda c,u,f,rc,p: c.subscribe(P + "/cmd", 1)
resp.on_subscribe = lambda *a: ready.set()
resp.on_message = lambda c,u,m: c.publish(P + "/send", b'{"type":"adduser"}', qos=0)
r2 = threading.Event()
req.on_connect = lambda c,u,f,rc,p: c.subscribe(P + "/send", 1)
req.on_subscribe = lambda *a: r2.set()
req.on_message = lambda c,u,m: got.set()
for c in (resp, req):
    c.connect("127.0.0.1", int(sys.argv[3]) if len(sys.argv)>3 else 1883); c.loop_start()
ready.wait(5); r2.wait(5)
rt = []
for i in range(60):
    got.clear(); t = time.perf_counter()
    req.publish(P + "/cmd", b'{"cmd":"adduser","uid":"X"}', qos=qos)
    got.wait(2); rt.append((time.perf_counter() - t) * 1000)
    time.sleep(0.02)
print("nodelay", nodelay, "qos", qos, "median %.2f ms p90 %.2f max %.2f" % (statistics.median(rt), sorted(rt)[54], max(rt)))
for c in (resp, req): c.disconnect(); c.loop_stop()

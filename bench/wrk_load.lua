-- wrk script for bench/booking_http.py: GET /healthz, or POST bookings of random (room, hour)
-- pairs with one bearer token per connection. Prints one JSON line of figures at the end.
-- Environment: BENCH_MODE=trivial|booking, BENCH_TOKENS=file, BENCH_DAY0=epoch seconds (UTC hour),
-- BENCH_SEED=number (a phase's own random pairs).

local mode = os.getenv("BENCH_MODE") or "trivial"
local tokens = {}
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  local f = io.open(os.getenv("BENCH_TOKENS") or "/dev/null")
  if f then
    for line in f:lines() do table.insert(tokens, line) end
    f:close()
  end
  day0 = tonumber(os.getenv("BENCH_DAY0") or "0")
  math.randomseed(id * 7919 + tonumber(os.getenv("BENCH_SEED") or "0"))  -- one seed per phase: no replays
  n = 0
end

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%S+00:00", t)
end

function request()
  n = n + 1
  if mode == "trivial" then
    return wrk.format("GET", "/healthz")
  end
  local start = day0 + 3600 * math.random(0, 24 * 300 - 1)
  local body = string.format('{"resource":"r000-%03d","start":"%s","end":"%s"}',
    math.random(0, 99), iso(start), iso(start + 3600))
  local token = tokens[((id * 1000 + n) % #tokens) + 1]
  return wrk.format("POST", "/api/v1/reservations",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local codes = {}
  for _, t in ipairs(threads) do
    for code, count in pairs(t:get("statuses")) do
      codes[code] = (codes[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(codes) do table.insert(parts, string.format('"%d":%d', code, count)) end
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"p50_ms":%.2f,"p95_ms":%.2f,"p99_ms":%.2f,"errors":%d,"codes":{%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout, table.concat(parts, ",")))
end

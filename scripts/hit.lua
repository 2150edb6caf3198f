-- hit.lua: wrk script for scripts/bench-hit.sh. Every request is the same
-- cached AHT question; done() prints one RESULT line the script parses.
--
--   wrk -t2 -c64 -d10s -s scripts/hit.lua http://127.0.0.1:8080/ca_apis/aht
--
-- Responses other than 200, and answers whose X-Cache is not HIT, are
-- counted so a wrong setup cannot pass for a fast one. With HIT_REQUIRED=1
-- an answer without X-Cache counts as not HIT too (for caching targets).
--
-- The account comes from the environment: AHT_USER (default demo) and
-- AHT_KEY (default demo-key), sent as userName and the apiKey header.

local user = os.getenv("AHT_USER") or "demo"
local key = os.getenv("AHT_KEY") or "demo-key"
local hit_required = os.getenv("HIT_REQUIRED") == "1"

wrk.method = "POST"
wrk.body = '{"userName":"' .. user .. '","agentId":"agent001"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["apiKey"] = key

-- Per-thread counters, read by done() through thread:get.
non200 = 0
nothit = 0

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
  local xc = headers["X-Cache"]
  if (xc == nil and hit_required) or (xc ~= nil and xc ~= "HIT") then
    nothit = nothit + 1
  end
end

function done(summary, latency, requests)
  local bad, miss = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    miss = miss + t:get("nothit")
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f non200=%d nothit=%d socket_errors=%d\n",
    summary.requests, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    bad, miss, e.connect + e.read + e.write + e.timeout))
end

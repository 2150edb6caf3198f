-- mix.lua: wrk script for scripts/load.sh — many apps polling AHT through
-- caproxy, as a contact centre's dashboards and routers would.
--
--   wrk -t2 -c64 -d20s -s scripts/mix.lua http://127.0.0.1:8080/ca_apis/aht
--
-- Each request is drawn from this mix:
--   * account: "demo" (token auth upstream) or "demo-basic" (apikey auth),
--     half each, with that account's apiKey header;
--   * 70% agents agent001..agent300, 30% campaigns campaign001..campaign100,
--     Zipf-skewed (key k drawn with probability about 1/k) so a few keys are
--     hot and most are cold;
--   * about 2% carry both agentId and campaignName (refused locally, 400),
--     1% ask for the unknown agent "agent999x" (CloudAgent says "agentId is
--     Invalid"; cached as a negative answer), 2% send Cache-Control:
--     no-cache (forces an upstream call within budget).
-- done() prints throughput, latency percentiles, status codes and X-Cache
-- values as lines starting with "MIX " for load.sh.

local agents, campaigns = 300, 100
local accounts = {
  { user = "demo", key = "demo-key" },
  { user = "demo-basic", key = "demo-basic-key" },
}

-- Per-thread tallies, read by done() through thread:get.
statuses = {}
xcache = {}

local threads = {}
local pool = {}
local poolSize = 8192

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

-- zipf draws 1..n with P(k) proportional to log((k+1)/k), about 1/k.
local function zipf(n)
  return math.floor((n + 1) ^ math.random())
end

local function build()
  local acct = accounts[math.random(#accounts)]
  local headers = { ["Content-Type"] = "application/json", ["apiKey"] = acct.key }
  local r = math.random()
  local body
  if r < 0.02 then
    body = string.format('{"userName":"%s","agentId":"agent%03d","campaignName":"campaign%03d"}',
      acct.user, zipf(agents), zipf(campaigns))
  elseif r < 0.03 then
    body = string.format('{"userName":"%s","agentId":"agent999x"}', acct.user)
  else
    if r < 0.05 then
      headers["Cache-Control"] = "no-cache"
    end
    if math.random() < 0.7 then
      body = string.format('{"userName":"%s","agentId":"agent%03d"}', acct.user, zipf(agents))
    else
      body = string.format('{"userName":"%s","campaignName":"campaign%03d"}', acct.user, zipf(campaigns))
    end
  end
  return wrk.format("POST", nil, headers, body)
end

-- Requests are drawn once into a pool per thread, so the mix costs wrk
-- almost nothing per request.
function init(args)
  math.randomseed(os.time() * 1000 + (id or 0) * 7919)
  for i = 1, poolSize do
    pool[i] = build()
  end
end

function request()
  return pool[math.random(poolSize)]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local xc = headers["X-Cache"] or "none"
  xcache[xc] = (xcache[xc] or 0) + 1
end

local function add(into, from)
  for k, v in pairs(from) do
    into[k] = (into[k] or 0) + v
  end
end

local function sortedKeys(t)
  local keys = {}
  for k in pairs(t) do table.insert(keys, k) end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

function done(summary, latency, requests)
  local st, xc = {}, {}
  for _, t in ipairs(threads) do
    add(st, t:get("statuses"))
    add(xc, t:get("xcache"))
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format("MIX requests=%d seconds=%.1f rps=%.0f\n", summary.requests, secs, summary.requests / secs))
  io.write(string.format("MIX latency_ms p50=%.3f p90=%.3f p99=%.3f max=%.3f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("MIX socket_errors connect=%d read=%d write=%d timeout=%d\n",
    e.connect, e.read, e.write, e.timeout))
  for _, k in ipairs(sortedKeys(st)) do
    io.write(string.format("MIX status %s %d\n", tostring(k), st[k]))
  end
  for _, k in ipairs(sortedKeys(xc)) do
    io.write(string.format("MIX x-cache %s %d\n", k, xc[k]))
  end
end

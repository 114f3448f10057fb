-- wrk script used by scripts/bench-scale: loads many distinct secrets, or
-- reads random ones of those loaded, over keep-alive connections.
--
-- Environment (tokens never appear in argv):
--   BENCH_MODE          load | get | kvload | kvget           (default get)
--                       load/get: Azure Key Vault  PUT|GET /secrets/{name}
--                       kvload/kvget: OpenBao KV v2 POST|GET /v1/secret/data/{name}
--   BENCH_HEADERS_FILE  file of "Name: value" lines added to every request
--   BENCH_PREFIX        name prefix; thread t's k-th name is PREFIX-t-k
--   BENCH_FROM          load: comma-separated first k of each thread (runs
--                       continue where the last one stopped; default 0s)
--   BENCH_COUNTS        get: comma-separated number of names of each thread
--                       known to exist; a request picks t and k < count_t
-- Load runs last for wrk's duration; done() prints "BENCH_SENT n0,n1,..."
-- (requests each thread sent) so the caller knows what exists.
--   BENCH_VALUE         the value written (default 100 bytes of 'v')
--   BENCH_CONNECT_HOST  address to connect to (see bench/secret.lua)
--
-- done() prints one "BENCH_RESULT" line as bench/secret.lua does.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
common.connect_to_fixed_host()

local mode = os.getenv("BENCH_MODE") or "get"
local prefix = os.getenv("BENCH_PREFIX") or "s"
local function list(var)
   local out = {}
   for n in (os.getenv(var) or ""):gmatch("[0-9]+") do table.insert(out, tonumber(n)) end
   return out
end
local froms = list("BENCH_FROM")
local counts = list("BENCH_COUNTS")
local value = os.getenv("BENCH_VALUE") or string.rep("v", 100)

local headers = common.headers()
headers["Content-Type"] = "application/json"

-- ---- setup/done run in the main Lua state ----
local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

-- ---- per-thread state ----
statuses = {}
first_bad = ""
sent = 0

function init(args)
   math.randomseed(os.time() + (tid or 0) * 7919)
   from = froms[(tid or 0) + 1] or 0
end

local function path_of(name)
   if mode == "kvload" or mode == "kvget" then
      return "/v1/secret/data/" .. name
   end
   return "/secrets/" .. name .. "?api-version=7.5"
end

function request()
   local name
   if mode == "load" or mode == "kvload" then
      name = prefix .. "-" .. tid .. "-" .. (from + sent)
      sent = sent + 1
      local body
      if mode == "kvload" then
         body = '{"data":{"value":"' .. value .. '"}}'
         return wrk.format("POST", path_of(name), headers, body)
      end
      body = '{"value":"' .. value .. '"}'
      return wrk.format("PUT", path_of(name), headers, body)
   end
   local t = math.random(0, #counts - 1)
   name = prefix .. "-" .. t .. "-" .. math.random(0, counts[t + 1] - 1)
   return wrk.format("GET", path_of(name), headers)
end

function response(status, hdrs, body)
   statuses[status] = (statuses[status] or 0) + 1
   if (status < 200 or status > 299) and first_bad == "" then
      first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 300)
   end
end

function done(summary, latency, requests)
   local ok, non2xx, first = 0, 0, ""
   local sents = {}
   for _, t in ipairs(threads) do
      table.insert(sents, tostring(t:get("sent") or 0))
      for status, n in pairs(t:get("statuses") or {}) do
         status = tonumber(status)
         if status >= 200 and status <= 299 then ok = ok + n else non2xx = non2xx + n end
      end
      local fb = t:get("first_bad") or ""
      if first == "" and fb ~= "" then first = fb end
   end
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f ok2xx=%d non2xx=%d sock_errors=%d\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, ok, non2xx, e.connect + e.read + e.write + e.timeout))
   io.write("BENCH_SENT " .. table.concat(sents, ",") .. "\n")
   if first ~= "" then
      io.write("BENCH_FIRST_BAD " .. first:gsub("[\r\n]", " ") .. "\n")
   end
end

-- wrk script used by scripts/bench: one fixed request (GET or PUT/POST of a
-- secret) repeated over keep-alive connections, with every response status
-- counted so that a run with any non-2xx answer can be rejected.
--
-- Configuration comes from the environment (so tokens never appear in argv):
--   BENCH_METHOD        GET | PUT | POST                      (default GET)
--   BENCH_HEADERS_FILE  file of "Name: value" lines added to the request
--   BENCH_BODY_FILE     file whose content is the request body (optional)
--   BENCH_EXPECT        plain substring every response body must contain
--                       (optional; used for GET to check the value returned)
--   BENCH_CONNECT_HOST  address to connect to instead of resolving the URL's
--                       host (e.g. 127.0.0.1 when *.localhost does not
--                       resolve). The URL's host is still used for TLS SNI
--                       and, with its port, for the Host header.
--
-- done() prints one machine-readable line starting with "BENCH_RESULT".

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local read_file = common.read_file
common.connect_to_fixed_host()

wrk.method = os.getenv("BENCH_METHOD") or "GET"

for name, value in pairs(common.headers()) do
   wrk.headers[name] = value
end

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
   wrk.body = read_file(body_file)
end

local expect = os.getenv("BENCH_EXPECT")
if expect == "" then expect = nil end

-- ---- per-thread state (each wrk thread has its own Lua state) ----
statuses  = {}   -- status code -> count
bad_body  = 0    -- 2xx responses whose body lacked BENCH_EXPECT
first_bad = ""   -- first unexpected response, for diagnostics

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status < 200 or status > 299 then
      if first_bad == "" then
         first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 300)
      end
   elseif expect and not string.find(body or "", expect, 1, true) then
      bad_body = bad_body + 1
      if first_bad == "" then
         first_bad = "body-mismatch " .. string.sub(body or "", 1, 300)
      end
   end
end

-- ---- setup/done run in the main Lua state ----
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   local counts, ok, non2xx, badb, first = {}, 0, 0, 0, ""
   for _, t in ipairs(threads) do
      for status, n in pairs(t:get("statuses") or {}) do
         status = tonumber(status)
         counts[status] = (counts[status] or 0) + n
         if status >= 200 and status <= 299 then
            ok = ok + n
         else
            non2xx = non2xx + n
         end
      end
      badb = badb + (t:get("bad_body") or 0)
      local fb = t:get("first_bad") or ""
      if first == "" and fb ~= "" then first = fb end
   end

   local codes = {}
   for status in pairs(counts) do table.insert(codes, status) end
   table.sort(codes)
   local parts = {}
   for _, status in ipairs(codes) do
      table.insert(parts, string.format("%d:%d", status, counts[status]))
   end

   local e = summary.errors
   local sockerr = e.connect + e.read + e.write + e.timeout
   local secs = summary.duration / 1e6
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f ok2xx=%d non2xx=%d bad_body=%d sock_errors=%d statuses=%s\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, ok, non2xx, badb, sockerr,
      #parts > 0 and table.concat(parts, ",") or "none"))
   if first ~= "" then
      io.write("BENCH_FIRST_BAD " .. first:gsub("[\r\n]", " ") .. "\n")
   end
end

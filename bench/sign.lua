-- wrk script used by scripts/bench-keys: a sign request (Keyhaven's
-- POST {kid}/sign or OpenBao's POST /v1/transit/sign/...) repeated over
-- keep-alive connections, with every response status counted so that a run
-- with any non-2xx answer can be rejected.
--
-- Each wrk thread builds a pool of requests whose 32-byte "digest" differs
-- (random bytes), and cycles through it, so that a server cannot answer a
-- deterministic signature (RS256) from a cache keyed by the input.
--
-- Configuration comes from the environment (so tokens never appear in argv):
--   BENCH_METHOD          HTTP method                              (default POST)
--   BENCH_HEADERS_FILE    file of "Name: value" lines added to the request
--   BENCH_BODY_TEMPLATE   request body; every "{{DIGEST}}" in it is replaced
--                         by the encoded random digest           (required)
--   BENCH_DIGEST_ENCODING b64url (base64url, no padding; Azure Key Vault) or
--                         b64 (standard base64 with padding; OpenBao)
--                                                                (default b64url)
--   BENCH_DIGEST_BYTES    digest length in bytes                  (default 32)
--   BENCH_POOL            distinct requests per thread            (default 1024)
--   BENCH_EXPECT          plain substring every response body must contain
--                         (e.g. "\"value\":\"" for Keyhaven)
--   BENCH_CONNECT_HOST    address to connect to instead of resolving the
--                         URL's host (e.g. 127.0.0.1 when *.localhost does
--                         not resolve). The URL's host is still used for TLS
--                         SNI and, with its port, for the Host header.
--
-- done() prints one machine-readable line starting with "BENCH_RESULT", in
-- the same format as bench/secret.lua.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
common.connect_to_fixed_host()

wrk.method = os.getenv("BENCH_METHOD") or "POST"

for name, value in pairs(common.headers()) do
   wrk.headers[name] = value
end

local template = os.getenv("BENCH_BODY_TEMPLATE") or ""
assert(template:find("{{DIGEST}}", 1, true), "BENCH_BODY_TEMPLATE must contain {{DIGEST}}")
local encoding = os.getenv("BENCH_DIGEST_ENCODING") or "b64url"
assert(encoding == "b64url" or encoding == "b64", "BENCH_DIGEST_ENCODING must be b64url or b64")
local digest_bytes = tonumber(os.getenv("BENCH_DIGEST_BYTES") or "32")
local pool_size = tonumber(os.getenv("BENCH_POOL") or "1024")
assert(digest_bytes and digest_bytes > 0 and pool_size and pool_size > 0)

local expect = os.getenv("BENCH_EXPECT")
if expect == "" then expect = nil end

-- ---- base64 (arithmetic only: LuaJIT/Lua 5.1 have no bit operators) ----
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

local function base64(bytes, url)
   local alphabet = url and B64URL or B64
   local out, n = {}, #bytes
   for i = 1, n, 3 do
      local a, b, c = bytes[i], bytes[i + 1], bytes[i + 2]
      local v = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(v / 262144) % 64
      local c2 = math.floor(v / 4096) % 64
      local c3 = math.floor(v / 64) % 64
      local c4 = v % 64
      out[#out + 1] = alphabet:sub(c1 + 1, c1 + 1)
      out[#out + 1] = alphabet:sub(c2 + 1, c2 + 1)
      if b then
         out[#out + 1] = alphabet:sub(c3 + 1, c3 + 1)
      elseif not url then
         out[#out + 1] = "="
      end
      if c then
         out[#out + 1] = alphabet:sub(c4 + 1, c4 + 1)
      elseif not url then
         out[#out + 1] = "="
      end
   end
   return table.concat(out)
end

-- ---- per-thread state (each wrk thread has its own Lua state) ----
statuses  = {}   -- status code -> count
bad_body  = 0    -- 2xx responses whose body lacked BENCH_EXPECT
first_bad = ""   -- first unexpected response, for diagnostics
thread_id = thread_id or 0   -- set by setup() through thread:set

local pool, next_req = {}, 1

function init(args)
   math.randomseed(os.time() * 1000 + (tonumber(thread_id) or 0) * 7919)
   for i = 1, pool_size do
      local bytes = {}
      for j = 1, digest_bytes do bytes[j] = math.random(0, 255) end
      local enc = base64(bytes, encoding == "b64url")
      -- plain (non-pattern) replacement of every {{DIGEST}}
      local body, from = {}, 1
      while true do
         local s, e = template:find("{{DIGEST}}", from, true)
         if not s then break end
         body[#body + 1] = template:sub(from, s - 1)
         body[#body + 1] = enc
         from = e + 1
      end
      body[#body + 1] = template:sub(from)
      pool[i] = wrk.format(nil, nil, nil, table.concat(body))
   end
end

function request()
   local r = pool[next_req]
   next_req = next_req % pool_size + 1
   return r
end

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
   thread:set("thread_id", #threads)
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

-- Shared by the wrk scripts in bench/: loaded with dofile() from the
-- directory of the script that wrk runs.

local common = {}

function common.read_file(path)
   local f = assert(io.open(path, "rb"), "cannot open " .. path)
   local s = f:read("*a")
   f:close()
   return s
end

-- wrk calls wrk.resolve(host, service) after loading the script; replacing
-- it lets us connect to a fixed address (BENCH_CONNECT_HOST) while keeping
-- the URL's hostname for TLS SNI and the Host header.
function common.connect_to_fixed_host()
   local connect_host = os.getenv("BENCH_CONNECT_HOST")
   if connect_host and connect_host ~= "" then
      wrk.resolve = function(host, service)
         local addrs = wrk.lookup(connect_host, service)
         for i = #addrs, 1, -1 do
            if not wrk.connect(addrs[i]) then
               table.remove(addrs, i)
            end
         end
         wrk.addrs = addrs
      end
   end
end

-- "Name: value" lines of BENCH_HEADERS_FILE as a table.
function common.headers()
   local out = {}
   local headers_file = os.getenv("BENCH_HEADERS_FILE")
   if headers_file and headers_file ~= "" then
      for line in common.read_file(headers_file):gmatch("[^\r\n]+") do
         local name, value = line:match("^([^:]+):%s*(.*)$")
         if name then out[name] = value end
      end
   end
   return out
end

return common

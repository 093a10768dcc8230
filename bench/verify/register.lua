-- wrk script: POST /RegisterCall against a verification node's REST API,
-- every request with a call_id never used before (thread number, a counter
-- and the start time), so each one adds an entry to the registry.
--
--   wrk -t4 -c64 -d30s -s bench/verify/register.lua http://127.0.0.1:8085
--
-- The registry keeps entries call_timer seconds: a long run at a high rate
-- measures a registry holding rate × call_timer calls.
--
-- Environment (defaults in brackets; A must be in the node's capacity for
-- the call to be outgoing, B anywhere; the answer is 201 either way):
--   FROM    first number A, 11 digits          [74950000000]
--   B_FROM  first number B                     [74951000000]
--   COUNT   how many numbers A and B cycle     [1000]
--   ID_DST  operator the calls go to           [5]
--
-- With the same FROM, B_FROM and COUNT, check.lua MODE=own_a then finds
-- these calls in the registry (200 instead of 404).

local from   = tonumber(os.getenv("FROM") or "74950000000")
local b_from = tonumber(os.getenv("B_FROM") or "74951000000")
local count  = tonumber(os.getenv("COUNT") or "1000")
local id_dst = tonumber(os.getenv("ID_DST") or "5")
local run    = os.time()

local threads = {}
local thread_no = 0

function setup(thread)
   thread_no = thread_no + 1
   thread:set("tid", thread_no)
   table.insert(threads, thread)
end

local headers = { ["Content-Type"] = "application/json" }
local n = 0
refused = 0

function request()
   local i = n % count
   n = n + 1
   local body = string.format(
      '{"a":"%d","b":"%d","id_dst":%d,"call_id":"reg-%d-%d-%d"}',
      from + i, b_from + i, id_dst, run, tid or 0, n)
   return wrk.format("POST", "/RegisterCall", headers, body)
end

function response(status, hdrs, body)
   if status ~= 201 then
      refused = refused + 1
   end
end

function done(summary, latency, requests)
   local total = 0
   for _, t in ipairs(threads) do
      total = total + (t:get("refused") or 0)
   end
   io.write(string.format("answers other than 201: %d\n", total))
end

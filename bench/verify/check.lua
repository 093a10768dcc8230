-- wrk script: POST /CheckCall against a verification node's REST API.
--
--   wrk -t4 -c64 -d30s -s bench/verify/check.lua http://127.0.0.1:8085
--
-- Every request is answered from the node's own state (capacity and
-- registry), never by asking another node, so the figure measures the REST
-- path and the local decision, not the network:
--
--   MODE=local (default)  A and B both in our capacity, id_src = our own
--                         operator: section 9 "local", answer 200 (pass).
--   MODE=own_a            A and B in our capacity, id_src another operator:
--                         registry lookup, answer 404 (release) unless the
--                         call was registered (run register.lua first with
--                         the same FROM/COUNT to get 200s).
--
-- Environment (defaults in brackets; they match a node whose capacity holds
-- 74950000000-74959999999 and whose own operator id is 100):
--   FROM    first number A, 11 digits               [74950000000]
--   COUNT   how many numbers A and B cycle through  [1000]
--   OWN_OP  our operator id (MODE=local)            [100]
--   PEER_OP another operator id (MODE=own_a)        [5]
--   B_FROM  first number B, in our capacity         [74951000000]
--
-- Answers other than the expected status are counted per thread and
-- printed at the end (a non-2xx is not an error for wrk itself).

local mode    = os.getenv("MODE") or "local"
local from    = tonumber(os.getenv("FROM") or "74950000000")
local count   = tonumber(os.getenv("COUNT") or "1000")
local own_op  = tonumber(os.getenv("OWN_OP") or "100")
local peer_op = tonumber(os.getenv("PEER_OP") or "5")
local b_from  = tonumber(os.getenv("B_FROM") or "74951000000")

local id_src = (mode == "own_a") and peer_op or own_op
-- MODE=own_a answers 200 or 404 depending on the registry: nothing unexpected.
local expected = 200
if mode == "own_a" then expected = nil end

local threads = {}
local thread_no = 0

function setup(thread)
   thread_no = thread_no + 1
   thread:set("tid", thread_no)
   table.insert(threads, thread)
end

local headers = { ["Content-Type"] = "application/json" }
local n = 0
statuses = {}

function request()
   local i = n % count
   n = n + 1
   local body = string.format(
      '{"a":"%d","b":"%d","id_src":%d,"call_id":"chk-%d-%d"}',
      from + i, b_from + i, id_src, tid or 0, n)
   return wrk.format("POST", "/CheckCall", headers, body)
end

function response(status, hdrs, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, t in ipairs(threads) do
      for status, c in pairs(t:get("statuses") or {}) do
         total[status] = (total[status] or 0) + c
      end
   end
   io.write(string.format("mode %s, id_src %d\n", mode, id_src))
   for status, c in pairs(total) do
      local mark = (expected and status ~= expected) and "  (unexpected)" or ""
      io.write(string.format("  HTTP %d: %d%s\n", status, c, mark))
   end
end

-- wrk script: POST /callUpdate for call ids upd-0 .. upd-(COUNT-1), which
-- bench/verify.sh registers first, so every answer is 200 (found, refreshed).
--
--   COUNT=1000 wrk -t1 -c64 -d10s -s bench/verify/update.lua http://127.0.0.1:8085
local count = tonumber(os.getenv("COUNT") or "1000")
local n = 0

request = function()
    n = n + 1
    local body = string.format('{"call_id":"upd-%d"}', n % count)
    return wrk.format("POST", "/callUpdate", { ["Content-Type"] = "application/json" }, body)
end

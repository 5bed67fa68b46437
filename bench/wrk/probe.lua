-- POST /v1/connections/{name}/probe on the gateway, as an admin: each probe
-- fetches a new system token from the company (bypassing the cache) and then
-- sends one GET to its base URL.
--   BENCH_ADMIN_TOKEN   an admin agent's token (deskbridge agent add --role admin)
--   BENCH_CONNECTION    the connection to probe
-- A probe that answers 200 with "ok": false (the token fetch failed) counts
-- as a bad answer, as a non-200 would.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local function required(name)
   local value = os.getenv(name)
   if value == nil or value == "" then
      error(name .. " is not set")
   end
   return value
end

wrk.method = "POST"
wrk.path = "/v1/connections/" .. required("BENCH_CONNECTION") .. "/probe"
wrk.headers["Authorization"] = "Bearer " .. required("BENCH_ADMIN_TOKEN")

local check_status = response
function response(status, headers, body)
   if status == 200 and not string.find(body, '^{"connection":"[^"]*","ok":true') then
      status = 0 -- counted and sampled as a bad answer
   end
   check_status(status, headers, body)
end

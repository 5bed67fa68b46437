-- POST /getprofile with all three credentials, taken from the environment:
--   BENCH_ACCESS_TOKEN  system access token (client credentials)
--   BENCH_API_KEY       API key granting getprofile
--   BENCH_JWT           the customer's JWT from /customer_authenticate
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
wrk.path = "/getprofile"
wrk.headers["Authorization"] = "Bearer " .. required("BENCH_ACCESS_TOKEN")
wrk.headers["api-key"] = required("BENCH_API_KEY")
wrk.headers["customer-auth"] = "JWT " .. required("BENCH_JWT")

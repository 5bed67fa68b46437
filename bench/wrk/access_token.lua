-- POST /access_token, client credentials with HTTP Basic authentication.
--   BENCH_BASIC  base64(client_id:client_secret)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local basic = os.getenv("BENCH_BASIC")
if basic == nil or basic == "" then
   error("BENCH_BASIC is not set")
end

wrk.method = "POST"
wrk.path = "/access_token"
wrk.headers["Authorization"] = "Basic " .. basic
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=client_credentials"

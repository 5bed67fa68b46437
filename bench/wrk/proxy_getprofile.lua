-- POST /getprofile with no credentials: for a reverse proxy that adds the
-- three fixed headers itself (bench/nginx.conf.template).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "POST"
wrk.path = "/getprofile"

-- GET /healthz: the baseline (routing, HTTP and a tiny JSON body, no work).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = "/healthz"

-- Breakdown stage of bench/gateway.sh: a valid agent (cached) asks for an
-- action the connection does not have. The gateway reads the conversation's
-- connection and token (one SQLite read), queues an audit record and
-- answers 404: HTTP, one read and one audit record, no backend call.
--   BENCH_AGENT_TOKEN, BENCH_CONVERSATION  as in gateway_action.lua
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")
expected_status = 404

wrk.method = "POST"
wrk.path = "/v1/conversations/" .. os.getenv("BENCH_CONVERSATION") .. "/actions/bench_no_such_action"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_AGENT_TOKEN")

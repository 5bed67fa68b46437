-- Breakdown stage of bench/gateway.sh: the action's route with an agent
-- token that does not exist. The gateway hashes it, misses its agent cache
-- (misses are not remembered), reads the agents table once and answers 401:
-- HTTP plus one SQLite read, no backend call, no audit record.
--   BENCH_CONVERSATION  the conversation id
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")
expected_status = 401

wrk.method = "POST"
wrk.path = "/v1/conversations/" .. os.getenv("BENCH_CONVERSATION") .. "/actions/getprofile"
wrk.headers["Authorization"] = "Bearer dbg_bench_not_an_agent_token_0000000000000000"

-- POST /v1/conversations/{id}/actions/getprofile on the gateway, as an agent:
--   BENCH_AGENT_TOKEN   the agent's token (deskbridge agent add)
--   BENCH_CONVERSATION  the conversation id from POST /v1/sessions
-- The customer's token was handed over when the session was opened; the
-- gateway adds the system token, the API key and the customer's token.
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
wrk.path = "/v1/conversations/" .. required("BENCH_CONVERSATION") .. "/actions/getprofile"
wrk.headers["Authorization"] = "Bearer " .. required("BENCH_AGENT_TOKEN")

-- Shared by every wrk script in this folder: counts responses that are not
-- 200 (a benchmark of error answers measures nothing) and prints one
-- machine-readable BENCH line at the end, which bench/backend.sh and
-- bench/gateway.sh parse. A script that measures an error path on purpose
-- sets `expected_status` after loading this file; `non200` then counts
-- answers other than that status.
--
-- Each wrk thread has its own Lua state; `setup` keeps a handle on each so
-- `done` (run in the main state) can collect their counters.

local threads = {}
expected_status = 200

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   non200 = 0          -- globals: read back with thread:get() in done()
   non200_by_status = {}
   non200_sample = nil
end

function response(status, headers, body)
   if status ~= expected_status then
      non200 = non200 + 1
      local key = tostring(status)
      non200_by_status[key] = (non200_by_status[key] or 0) + 1
      if non200_sample == nil then
         non200_sample = body
      end
   end
end

function done(summary, latency, requests)
   local bad, by_status, sample = 0, {}, nil
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("non200") or 0)
      for status, n in pairs(thread:get("non200_by_status") or {}) do
         by_status[status] = (by_status[status] or 0) + n
      end
      sample = sample or thread:get("non200_sample")
   end
   local e = summary.errors
   local socket_errors = e.connect + e.read + e.write + e.timeout
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non200=%d socket_errors=%d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      bad, socket_errors))
   if bad > 0 then
      local parts = {}
      for status, n in pairs(by_status) do
         table.insert(parts, status .. "x" .. n)
      end
      io.write("BENCH non-200 statuses: " .. table.concat(parts, " ") .. "\n")
      io.write("BENCH first non-200 body: " .. tostring(sample) .. "\n")
   end
   if socket_errors > 0 then
      io.write(string.format("BENCH socket errors: connect=%d read=%d write=%d timeout=%d\n",
         e.connect, e.read, e.write, e.timeout))
   end
end

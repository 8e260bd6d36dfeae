-- wrk script of `MIX=status scripts/loadtest.sh`: authenticated status reads from many users.
--
-- The entries were created before the run; MATCHWELL_ENTRIES names a file of lines
-- "USER TOKEN ENTRY". Each wrk thread takes every WRK_THREADS-th line and goes round its
-- users' status requests, formatted once. No response callback: wrk then leaves answers
-- unparsed by Lua, so the load generator spends its time on the requests.

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

function init(args)
   local thread_count = tonumber(os.getenv("WRK_THREADS") or "1")
   requests = {}
   local line_number = 0
   for line in io.lines(os.getenv("MATCHWELL_ENTRIES")) do
      if line_number % thread_count == thread_index then
         local user, token, entry = line:match("^(%S+) (%S+) (%S+)$")
         table.insert(requests, wrk.format("GET", "/v1/matchmaking/queue/" .. entry, {
            ["Authorization"] = "Bearer " .. token,
         }))
      end
      line_number = line_number + 1
   end
   cursor = 0
end

function request()
   cursor = cursor % #requests + 1
   return requests[cursor]
end

-- wrk script of `MIX=status scripts/loadtest.sh`: authenticated status reads from many users.
--
-- The entries were created before the run; MATCHWELL_ENTRIES names a file of lines
-- "USER TOKEN ENTRY". Each wrk thread takes every WRK_THREADS-th line and goes round its
-- users' status requests, formatted once. No response callback: wrk then leaves answers
-- unparsed by Lua, so the load generator spends its time on the requests.

dofile("scripts/loadtest-users.lua")

function init(args)
   requests = {}
   for line in own_lines(os.getenv("MATCHWELL_ENTRIES")) do
      local user, token, entry = line:match("^(%S+) (%S+) (%S+)$")
      table.insert(requests, wrk.format("GET", "/v1/matchmaking/queue/" .. entry, {
         ["Authorization"] = "Bearer " .. token,
      }))
   end
   cursor = 0
end

function request()
   cursor = cursor % #requests + 1
   return requests[cursor]
end

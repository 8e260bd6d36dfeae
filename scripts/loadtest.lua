-- wrk script of scripts/loadtest.sh: authenticated queue traffic from many users.
--
-- Each user goes round enqueue → status → cancel → status. The users and their tokens come
-- from the file named by MATCHWELL_TOKENS (lines "USER TOKEN"); each wrk thread takes every
-- WRK_THREADS-th line (scripts/loadtest-users.lua). A request carries its user's index as
-- X-Request-Id, which the server echoes, so that an answer finds its user whichever
-- connection it came back on. A user has at most one request in flight.

dofile("scripts/loadtest-users.lua")

function init(args)
   users = {}
   for line, line_number in own_lines(os.getenv("MATCHWELL_TOKENS")) do
      local user, token = line:match("^(%S+) (%S+)$")
      local index = #users + 1
      local rating = 800 + (line_number * 37) % 1600
      local body = string.format(
         '{"time_control":"5+3","variant":"standard","rated":true,"rating":%d}', rating)
      table.insert(users, {
         -- Requests are formatted once: the enqueue now, status and cancel once the
         -- entry is known.
         headers = { ["Authorization"] = "Bearer " .. token, ["X-Request-Id"] = tostring(index) },
         enqueue = wrk.format("POST", "/v1/matchmaking/queue", {
            ["Authorization"] = "Bearer " .. token,
            ["X-Request-Id"] = tostring(index),
            ["Content-Type"] = "application/json",
         }, body),
         status = nil,
         cancel = nil,
         phase = 0,
         busy = false,
      })
   end
   cursor = 0
   statuses = {}
   idle = 0
end

function request()
   for _ = 1, #users do
      cursor = cursor % #users + 1
      local user = users[cursor]
      if not user.busy then
         user.busy = true
         if user.phase == 0 then
            return user.enqueue
         elseif user.phase == 2 then
            return user.cancel
         else
            return user.status
         end
      end
   end
   -- Every user has a request in flight: too few users for the connections.
   idle = idle + 1
   return wrk.format("GET", "/health/live")
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   local user = users[tonumber(headers["x-request-id"] or "")]
   if user == nil then
      return
   end
   user.busy = false
   if user.phase == 0 then
      -- 201, or 409 ALREADY_QUEUED naming the entry: go on with that entry.
      local id = body:match('"id":"(q_%x+)"')
      if id then
         local path = "/v1/matchmaking/queue/" .. id
         user.status = wrk.format("GET", path, user.headers)
         user.cancel = wrk.format("DELETE", path, user.headers)
         user.phase = 1
      end
   else
      user.phase = (user.phase + 1) % 4
   end
end

function done(summary, latency, requests)
   local total = {}
   local idle_total = 0
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + count
      end
      idle_total = idle_total + thread:get("idle")
   end
   local line = "statuses:"
   for status, count in pairs(total) do
      line = line .. string.format(" %d=%d", status, count)
   end
   print(line)
   if idle_total > 0 then
      print(string.format("requests without a free user (health checks instead): %d", idle_total))
   end
end

-- Shared by the wrk scripts of scripts/loadtest.sh, which runs wrk from the repository root
-- (so they load this with a path from there): registers each wrk thread and hands it its
-- share of the users.

threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

-- Iterates over this wrk thread's lines of file `path` (every WRK_THREADS-th line), giving
-- each line and its number in the file, from 0.
function own_lines(path)
   local thread_count = tonumber(os.getenv("WRK_THREADS") or "1")
   local next_line = io.lines(path)
   local line_number = -1
   return function()
      for line in next_line do
         line_number = line_number + 1
         if line_number % thread_count == thread_index then
            return line, line_number
         end
      end
   end
end

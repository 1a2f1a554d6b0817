-- GET paths as one of several users (or anonymously).
-- wrk ... -s auth_get.lua URL -- FILE THREADS
-- FILE has one request per line: "USER<TAB>AUTHORIZATION<TAB>PATH" (AUTHORIZATION empty:
-- no header). Thread t keeps the lines of the users with USER % THREADS == t, so every
-- token is used by one thread only; each request is one of the thread's lines at random.
-- Requests are formatted once, in init, so the script costs the same with or without a token.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local reqs = {}
local count = 0

function init(args)
  seed_thread()
  local threads = tonumber(args[2])
  local mine = (tid or 0) % threads
  for line in io.lines(args[1]) do
    local user, auth, path = line:match("^(%d+)\t([^\t]*)\t(.+)$")
    if user and tonumber(user) % threads == mine then
      local headers = {}
      if auth ~= "" then
        headers["Authorization"] = auth
      end
      count = count + 1
      reqs[count] = wrk.format("GET", path, headers)
    end
  end
  if count == 0 then
    error("no requests for thread " .. (tid or 0) .. " in " .. args[1])
  end
end

function request()
  return reqs[math.random(count)]
end

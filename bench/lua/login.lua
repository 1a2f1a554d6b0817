-- POST a JSON sign-in body of one of several users (correct passwords).
-- wrk ... -s login.lua URL -- FILE PATH THREADS
-- FILE has one user per line: "USER<TAB>JSON BODY"; thread t keeps the users with
-- USER % THREADS == t and picks one at random per request.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local reqs = {}
local count = 0

function init(args)
  seed_thread()
  local threads = tonumber(args[3])
  local mine = (tid or 0) % threads
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    local user, body = line:match("^(%d+)\t(.+)$")
    if user and tonumber(user) % threads == mine then
      count = count + 1
      reqs[count] = wrk.format("POST", args[2], headers, body)
    end
  end
  if count == 0 then
    error("no users for thread " .. (tid or 0) .. " in " .. args[1])
  end
end

function request()
  return reqs[math.random(count)]
end

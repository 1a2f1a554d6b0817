-- POST a new JSON record.
-- wrk ... -s create.lua URL -- PATH
-- Bodies look like the seeded records: {"title": ..., "score": 0..1000, "done": bool}.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local path = "/"
local n = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  seed_thread()
  path = args[1]
end

function request()
  n = n + 1
  local body = string.format(
    '{"title":"new %d-%d lorem ipsum dolor","score":%d,"done":%s}',
    tid or 0, n, math.random(0, 1000), math.random() < 0.5 and "true" or "false")
  return wrk.format("POST", path, headers, body)
end

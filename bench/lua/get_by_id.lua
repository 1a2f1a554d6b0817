-- GET a random record by id.
-- wrk ... -s get_by_id.lua URL -- IDS_FILE PATH_PREFIX
-- IDS_FILE has one id per line; each request is GET PATH_PREFIX .. id.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local ids = {}
local count = 0
local prefix = "/"

function init(args)
  seed_thread()
  prefix = args[2]
  for line in io.lines(args[1]) do
    if line ~= "" then
      count = count + 1
      ids[count] = line
    end
  end
  if count == 0 then
    error("no ids in " .. args[1])
  end
end

function request()
  return wrk.format("GET", prefix .. ids[math.random(count)])
end

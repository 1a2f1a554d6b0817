-- Loaded by the scenario scripts: gives each wrk thread a number (tid) and a
-- fixed random seed, so both servers see the same sequence of choices.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function seed_thread()
  math.randomseed(20240601 + 7919 * (tid or 0))
end

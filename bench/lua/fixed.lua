-- One fixed GET URL (the list scenarios); only adds the JSON report.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

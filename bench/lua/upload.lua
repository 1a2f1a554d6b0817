-- POST a multipart/form-data upload read from a file, different bytes every request.
-- wrk ... -s upload.lua URL -- BODY_FILE PATH CONTENT_TYPE MARKER RUN
-- BODY_FILE is the whole request body (fields, then the 1 MiB file part); MARKER is a
-- string at the start of the file's bytes. Each request replaces it, at the same length,
-- by "RUN-THREAD-N", RUN being unique per wrk invocation: no two uploads of a benchmark
-- have the same content, so content-addressed storage cannot skip writing any of them.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local pre, post, path, run
local width = 0
local n = 0
local headers = {}

function init(args)
  seed_thread()
  local fh = assert(io.open(args[1], "rb"))
  local body = fh:read("*a")
  fh:close()
  local first, last = body:find(args[4], 1, true)
  if not first then
    error("marker not found in " .. args[1])
  end
  pre, post, width = body:sub(1, first - 1), body:sub(last + 1), last - first + 1
  path, run = args[2], args[5]
  headers["Content-Type"] = args[3]
end

function request()
  n = n + 1
  local tag = string.format("%s-%d-%d-", run, tid or 0, n)
  tag = tag .. string.rep("x", width - #tag)
  return wrk.format("POST", path, headers, pre .. tag .. post)
end

-- wrk script for the serving benchmarks: POST a body read from a file.
-- Environment: WRK_BODY_FILE (the body), WRK_CONTENT_TYPE, WRK_HEADER_LENGTH (optional,
-- the KServe binary extension's Inference-Header-Content-Length), WRK_MORE_BODY_FILES (optional,
-- more body files, one path a line: the requests cycle through all the bodies in turn).
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local body = f:read("*a")
  f:close()
  return body
end

wrk.method = "POST"
wrk.body = slurp(os.getenv("WRK_BODY_FILE"))
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
local header_length = os.getenv("WRK_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

local more = os.getenv("WRK_MORE_BODY_FILES")
if more and more ~= "" then
  local bodies, requests, next_request = { wrk.body }, {}, 0
  for path in more:gmatch("[^\n]+") do
    bodies[#bodies + 1] = slurp(path)
  end
  request = function()
    if #requests == 0 then -- formatted on first use, once wrk has set the URL's path
      for i, body in ipairs(bodies) do
        requests[i] = wrk.format(nil, nil, nil, body)
      end
    end
    next_request = next_request % #requests + 1
    return requests[next_request]
  end
end

-- wrk script for the serving benchmark: POST one fixed body read from a file.
-- Environment: WRK_BODY_FILE (the body), WRK_CONTENT_TYPE, WRK_HEADER_LENGTH (optional,
-- the KServe binary extension's Inference-Header-Content-Length).
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
local header_length = os.getenv("WRK_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

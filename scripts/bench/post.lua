-- POST with a small body: one single-item enqueue per request (the baseline gets the same request).
-- BENCH_BODY overrides the body (default: a 16-byte item); BENCH_TOKEN adds `Authorization: Bearer`.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "work-item-000000"
wrk.headers["Content-Type"] = "text/plain"
local token = os.getenv("BENCH_TOKEN")
if token then
  wrk.headers["Authorization"] = "Bearer " .. token
end

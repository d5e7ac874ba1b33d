-- POST with a small body: one single-item enqueue per request (the baseline gets the same request).
-- BENCH_BODY overrides the body (default: a 16-byte item).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "work-item-000000"
wrk.headers["Content-Type"] = "text/plain"

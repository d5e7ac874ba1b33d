-- Single-item enqueues spread over many queues, in turn: BENCH_QUEUE_PATH is their path up to a
-- two-digit number (e.g. /memq/server/queues/spread- for spread-00 ...), BENCH_QUEUES how many.
local prefix = os.getenv("BENCH_QUEUE_PATH") or "/memq/server/queues/spread-"
local queues = tonumber(os.getenv("BENCH_QUEUES") or "30")
local body = "work-item-000000"
local n = 0

function request()
  n = n + 1
  local path = string.format("%s%02d/enqueue", prefix, n % queues)
  return wrk.format("POST", path, { ["Content-Type"] = "text/plain" }, body)
end

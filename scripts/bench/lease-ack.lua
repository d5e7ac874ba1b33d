-- Lease+ack pairs: each connection leases an item (POST .../dequeue?lease=30s), and a lease id
-- from an answer is acked by the next request sent (POST .../leases/{id}/ack). The lease id is
-- read from the answer in response(); done() prints how many acks succeeded.
-- Against the baseline (204s, no lease ids) every request is a lease request.
-- BENCH_QUEUE_PATH: the queue's path, e.g. /memq/server/queues/lease
local base = os.getenv("BENCH_QUEUE_PATH") or "/memq/server/queues/lease"
local lease_path = base .. "/dequeue?lease=30"
local pending = {}
acks = 0
errors = 0

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function request()
  local n = #pending
  if n > 0 then
    local id = pending[n]
    pending[n] = nil
    return wrk.format("POST", base .. "/leases/" .. id .. "/ack")
  end
  return wrk.format("POST", lease_path)
end

function response(status, headers, body)
  if status == 200 and body ~= nil and #body > 0 then
    local id = string.match(body, '"lease":{"id":"([0-9A-Z]+)"')
    if id then
      pending[#pending + 1] = id
    else
      errors = errors + 1
    end
  elseif status == 200 then
    acks = acks + 1
  elseif status ~= 204 then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local a, e = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("acks")
    e = e + t:get("errors")
  end
  io.write(string.format("lease-ack: acks %d errors %d duration_us %d\n", a, e, summary.duration))
end

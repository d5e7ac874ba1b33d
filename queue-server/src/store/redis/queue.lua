#!lua name={{LIBRARY}}
-- memq: every change to one queue, as one atomic call of this Redis Functions library (FCALL).
-- See docs/redis.md.
--
-- Redis loads the library once (FUNCTION LOAD); a call runs only `call` below and the op it
-- names. The state of one call lives in the library's locals, set afresh at the start of every
-- call: Redis runs one call at a time, to its end.
--
-- The rules are those of src/broker/queue.rs (the memory store), translated to Redis types:
-- item bodies in a hash by id, the ready list holds ids, leases in a hash lease -> item with a
-- sorted set of deadlines, so every hand-out, ack, nack and extend is O(1) or O(log n).
--
-- KEYS, always all of them and in this order; they share the hash tag {queue}, so the queue
-- lives in one Redis Cluster slot:
local K_META, K_ITEMS, K_ATTEMPTS, K_READY, K_DELAYED, K_LEASES, K_DEADLINES, K_DEAD, K_DIED,
    K_KEYS, K_KEYOF, K_RELEASED, K_EXPIRED, K_HOLDERS
-- K_META      hash: config (lease_ms, max_attempts, max_depth, paused), running totals,
--             wait_until (ms until which some replica has a long poll waiting), due (see below),
--             named ('1' once a lease was taken by a named consumer: K_HOLDERS is in use),
--             consumers (how many named consumers hold leases now)
-- K_ITEMS     hash: item id -> body (ready, delayed, leased and dead items)
-- K_ATTEMPTS  hash: item id -> deliveries so far (absent: 0)
-- K_READY     list: ready item ids in hand-out order
-- K_DELAYED   zset: item id scored by the ms at which it becomes ready
-- K_LEASES    hash: lease id -> item id
-- K_DEADLINES zset: lease id scored by its deadline
-- K_DEAD      list: dead item ids, oldest first;  K_DIED hash: item id -> ms it died
-- K_KEYS      hash: producer key -> item id;  K_KEYOF hash: item id -> key (while in the queue)
-- K_RELEASED  zset: key scored by the ms its item left the queue (freed after the retention)
-- K_EXPIRED   zset: recently expired lease ids (to answer 410 rather than 404)
-- K_HOLDERS   hash: lease id -> the consumer that took it (X-Memq-Consumer), when it said;
--             and '#' .. consumer -> how many leases it holds (absent at 0)
-- K_META's `layout`: the key layout the queue is in (see LAYOUT below).
--
-- ARGV[1] op, ARGV[2] wake channel, ARGV[3] the calling replica's tag, ARGV[4] queue name,
-- ARGV[5..] the op's own arguments.
local KEYS, ARGV
local OP, CHANNEL, ORIGIN, QUEUE

local RETENTION = {{KEY_RETENTION_MS}}
local EXPIRED_CAP = {{EXPIRED_LEASES_REMEMBERED}}
-- The key layout this library writes (src/store/redis/layout.rs). A queue records the layout it
-- is in (K_META's `layout`; absent: 1, as 0.1.0 wrote it): an older one is brought up to this
-- one in the same call, before the op runs; a newer one is refused, untouched.
local LAYOUT = {{LAYOUT}}
-- Most expiries or delays one call applies; the rest waits for the next call, so no call
-- blocks Redis for long (the sweeper calls again at once when there is more).
local SWEEP_LIMIT = 5000
-- unpack() of more than ~8000 values overflows Lua's C stack: multi-value commands go in chunks.
local CHUNK = 1000

-- One clock for every replica: Redis's. Replicas with skewed clocks still agree on deadlines.
local now

-- Items that became ready during this call (waiters to wake), and whether every waiter must
-- look again (pause, resume, delete).
local readied
local wake_all
local more
-- Whether this call changed the queue (then, if it left it finished, waiters look again).
local changed

-- When time next acts on the queue (0: never): the earliest lease deadline, delayed item or
-- retained key's end. Kept in K_META's `due` so that a call sweeps only once something fell
-- due, and returned to the replicas so that one sweeps then. It may be earlier than the true
-- one (an ack removed that lease), never later: a sweep at this time finds the rest and sets
-- it anew. Every write of a deadline, delay or retention lowers it (note_due).
local next_due
-- Whether next_due changed in this call (written back to K_META at its end).
local due_changed
-- The latest end of a long poll some replica registered (K_META's wait_until).
local wait_until

local function note_due(t)
    if t and (next_due == 0 or t < next_due) then
        next_due = t
        due_changed = true
    end
end

local function incr(field, n)
    if n ~= 0 then
        redis.call('HINCRBY', K_META, field, n)
        changed = true
    end
end

local function chunked(cmd, key, values, step)
    step = step or 1
    local per = CHUNK * step
    for i = 1, #values, per do
        local last = math.min(i + per - 1, #values)
        redis.call(cmd, key, unpack(values, i, last))
    end
end

-- The queue's config, read once per call before the op runs (lease_ms is always set, so its
-- absence means the queue does not exist).
local META

local function config()
    return tonumber(META[1]) or 30000, tonumber(META[2]) or 0, tonumber(META[3]) or 0,
        META[4] == '1'
end

-- The item left the queue: its key stays taken for RETENTION from now (--dedup-window; 0:
-- the key is free at once).
local function release(item)
    local key = redis.call('HGET', K_KEYOF, item)
    if key then
        redis.call('HDEL', K_KEYOF, item)
        if RETENTION == 0 then
            redis.call('HDEL', K_KEYS, key)
        else
            redis.call('ZADD', K_RELEASED, now, key)
            note_due(now + RETENTION)
        end
    end
end

local function forget(items)
    if #items > 0 then
        chunked('HDEL', K_ITEMS, items)
        chunked('HDEL', K_ATTEMPTS, items)
    end
end

-- The consumer of a lease that ended (only on queues whose consumers ever named themselves).
local function forget_holder(lease)
    if META[7] == '1' then
        local name = redis.call('HGET', K_HOLDERS, lease)
        if name then
            redis.call('HDEL', K_HOLDERS, lease)
            if redis.call('HINCRBY', K_HOLDERS, '#' .. name, -1) <= 0 then
                redis.call('HDEL', K_HOLDERS, '#' .. name)
                redis.call('HINCRBY', K_META, 'consumers', -1)
            end
        end
    end
end

local function remember_expired(lease)
    redis.call('ZADD', K_EXPIRED, now, lease)
    -- Trimmed in steps of 1000, not on every expiry.
    if redis.call('ZCARD', K_EXPIRED) > EXPIRED_CAP + 1000 then
        redis.call('ZREMRANGEBYRANK', K_EXPIRED, 0, -(EXPIRED_CAP + 1))
    end
end

local function earliest(key)
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 then
        return tonumber(first[2])
    end
    return nil
end

-- A leased item comes back: to the front (or after delay), or to the dead letters when it
-- used up its attempts.
local function give_back(item, delay, max_attempts)
    local attempts = tonumber(redis.call('HGET', K_ATTEMPTS, item)) or 0
    if max_attempts > 0 and attempts >= max_attempts then
        redis.call('RPUSH', K_DEAD, item)
        redis.call('HSET', K_DIED, item, now)
        incr('died', 1)
    else
        incr('requeued', 1)
        if delay == 0 then
            redis.call('LPUSH', K_READY, item)
            readied = readied + 1
        else
            redis.call('ZADD', K_DELAYED, now + delay, item)
            note_due(now + delay)
        end
    end
end

-- Lets time act: expired leases back to the front in deadline order (or to the dead letters),
-- due delayed items to the back, keys past their retention freed. Costs nothing until the
-- queue's `due` time (unless `always`: the sweeper's own call, which also mends a `due` that
-- is missing); then looks at the earliest entry of each set, acts, and sets `due` anew.
local function sweep(max_attempts, always)
    if not always and META[5] and (next_due == 0 or next_due > now) then
        return
    end
    local lease_due = earliest(K_DEADLINES)
    if lease_due and lease_due <= now then
        local due = redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', now, 'LIMIT', 0, SWEEP_LIMIT)
        chunked('ZREM', K_DEADLINES, due)
        -- Latest deadline first: each goes to the front, so the earliest ends up first.
        for i = #due, 1, -1 do
            local lease = due[i]
            local item = redis.call('HGET', K_LEASES, lease)
            redis.call('HDEL', K_LEASES, lease)
            forget_holder(lease)
            remember_expired(lease)
            if item then
                give_back(item, 0, max_attempts)
            end
        end
        if #due == SWEEP_LIMIT then
            more = 1
        end
        lease_due = earliest(K_DEADLINES)
    end
    local delay_due = earliest(K_DELAYED)
    if delay_due and delay_due <= now then
        local ready = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, SWEEP_LIMIT)
        chunked('ZREM', K_DELAYED, ready)
        chunked('RPUSH', K_READY, ready)
        readied = readied + #ready
        if #ready == SWEEP_LIMIT then
            more = 1
        end
        delay_due = earliest(K_DELAYED)
    end
    local key_due = earliest(K_RELEASED)
    if key_due and key_due <= now - RETENTION then
        local freed = redis.call('ZRANGEBYSCORE', K_RELEASED, '-inf', now - RETENTION, 'LIMIT', 0,
            CHUNK)
        chunked('HDEL', K_KEYS, freed)
        chunked('ZREM', K_RELEASED, freed)
        if #freed == CHUNK then
            more = 1
        end
        key_due = earliest(K_RELEASED)
    end
    next_due = 0
    note_due(lease_due)
    note_due(delay_due)
    note_due(key_due and key_due + RETENTION)
    -- Written back only when it moved: an idle queue's sweeps write nothing.
    due_changed = next_due ~= tonumber(META[5])
end


local function stats()
    local m = redis.call('HMGET', K_META, 'enqueued', 'dequeued', 'drained', 'acked', 'requeued',
        'paused', 'lease_ms', 'max_attempts', 'max_depth', 'autoscale', 'consumers')
    return {
        tonumber(m[1]) or 0, tonumber(m[2]) or 0, tonumber(m[3]) or 0, tonumber(m[4]) or 0,
        tonumber(m[5]) or 0, m[6] == '1' and 1 or 0, tonumber(m[7]) or 0, tonumber(m[8]) or 0,
        tonumber(m[9]) or 0,
        redis.call('LLEN', K_READY), redis.call('HLEN', K_LEASES), redis.call('ZCARD', K_DELAYED),
        redis.call('LLEN', K_DEAD),
        redis.call('LINDEX', K_READY, 0) or '', redis.call('LINDEX', K_READY, -1) or '',
        m[10] or '', redis.call('ZCARD', K_RELEASED), tonumber(m[11]) or 0,
    }
end

-- Tells the replicas with long polls on this queue that items became ready. Only when one
-- registered a wait that is still running: a queue nobody waits on costs no messages.
local function publish()
    if (readied > 0 or wake_all) and wait_until > now then
        local count = readied
        if wake_all then
            count = -1
        end
        redis.call('PUBLISH', CHANNEL, ORIGIN .. ':' .. count .. ':' .. QUEUE)
    end
end

-- Writes what this call learned about `due` back to K_META.
local function save_due()
    if due_changed then
        redis.call('HSET', K_META, 'due', next_due)
    end
end

-- Every reply: {status, now, next deadline (0: none), readied (-1: wake all), more, ...}.
local function reply(status, ...)
    -- Nothing ready, leased or delayed after a change (the last ack, a drain): long polls
    -- waiting for other consumers' last items can end.
    if changed and not wake_all and readied == 0 and redis.call('LLEN', K_READY) == 0
        and redis.call('HLEN', K_LEASES) == 0 and redis.call('ZCARD', K_DELAYED) == 0 then
        wake_all = true
    end
    publish()
    save_due()
    local r = readied
    if wake_all then
        r = -1
    end
    return { status, now, next_due, r, more, ... }
end

local function missing()
    return { 'no_queue', now, 0, 0, 0 }
end

-- A lease that is still running: its item, or nil and 404 / 410.
local function live(lease)
    local item = redis.call('HGET', K_LEASES, lease)
    if item then
        if (tonumber(redis.call('ZSCORE', K_DEADLINES, lease)) or 0) > now then
            return item
        end
        -- Past its deadline but beyond this call's sweep limit: expired all the same.
        return nil, 410
    end
    if redis.call('ZSCORE', K_EXPIRED, lease) then
        return nil, 410
    end
    return nil, 404
end

local function drop_lease(lease)
    redis.call('HDEL', K_LEASES, lease)
    redis.call('ZREM', K_DEADLINES, lease)
    forget_holder(lease)
end

local ops = {}

-- create: ARGV[5..7] defaults (lease_ms, max_attempts, max_depth), ARGV[8..10] the patch
-- ('' = field not given), ARGV[11] autoscale ('' = not given, 'off', or
-- 'maxParallelism:itemsPerPod'). Reply: ..., created (0/1), stats.
function ops.create()
    local patch = { ARGV[8], ARGV[9], ARGV[10] }
    local autoscale = ARGV[11]
    if autoscale == 'off' then
        redis.call('HDEL', K_META, 'autoscale')
    elseif autoscale ~= '' then
        redis.call('HSET', K_META, 'autoscale', autoscale)
    end
    local created = 0
    if not META[1] then
        local v = { ARGV[5], ARGV[6], ARGV[7] }
        for i = 1, 3 do
            if patch[i] ~= '' then
                v[i] = patch[i]
            end
        end
        redis.call('HSET', K_META, 'lease_ms', v[1], 'max_attempts', v[2], 'max_depth', v[3],
            'paused', '0', 'due', 0, 'layout', LAYOUT)
        created = 1
    else
        local _, max_attempts = config()
        sweep(max_attempts)
        local fields = { 'lease_ms', 'max_attempts', 'max_depth' }
        for i = 1, 3 do
            if patch[i] ~= '' and redis.call('HSET', K_META, fields[i], patch[i]) == 0 then
                changed = true
            end
        end
    end
    return reply('ok', created, stats())
end

-- queue: the queue's figures.
function ops.queue()
    local _, max_attempts = config()
    sweep(max_attempts)
    return reply('ok', stats())
end

-- sweep: let time act (the sweeper's call).
function ops.sweep()
    local _, max_attempts = config()
    sweep(max_attempts, true)
    return reply('ok')
end

-- delete: the figures as they were; every key of the queue goes; waiters look again (404).
function ops.delete()
    local s = stats()
    for _, key in ipairs(KEYS) do
        redis.call('UNLINK', key)
    end
    wake_all = true
    publish()
    return { 'ok', now, 0, -1, 0, s }
end

-- drain: ready and delayed items go (counted in drained); leased and dead ones stay.
function ops.drain()
    local _, max_attempts = config()
    sweep(max_attempts)
    local ids = redis.call('LRANGE', K_READY, 0, -1)
    local delayed = redis.call('ZRANGE', K_DELAYED, 0, -1)
    for _, id in ipairs(delayed) do
        ids[#ids + 1] = id
    end
    if redis.call('HLEN', K_KEYOF) > 0 then
        for _, id in ipairs(ids) do
            release(id)
        end
    end
    forget(ids)
    redis.call('UNLINK', K_READY, K_DELAYED)
    incr('drained', #ids)
    return reply('ok', #ids, stats())
end

-- pause: ARGV[5] '1' pause, '0' resume. Waiters look again either way.
function ops.pause()
    local _, max_attempts = config()
    sweep(max_attempts)
    redis.call('HSET', K_META, 'paused', ARGV[5])
    wake_all = true
    return reply('ok', stats())
end

-- What the requests of one enqueue call add, written once at the end of the call: bodies
-- (id, body, ...), ready ids in order, delayed (due, id, ...), keys (key, id, ...) and their
-- reverse (id, key, ...), and how many items in all.
local add

-- One request's items, from ARGV[at]: delay (ms), n, then n times id, key ('' = none), body.
-- All or none against maxDepth, counting what earlier requests of this call add. Returns the
-- next request's position and its result: {'ok', {index, holder id, ...} of the duplicates} or
-- {'full', max_depth, held, adding}.
local function enqueue_group(at, max_depth)
    local delay = tonumber(ARGV[at])
    local n = tonumber(ARGV[at + 1])
    local first = at + 2
    local holders = {}
    local mine = {}
    local adding = 0
    for i = 1, n do
        local base = first + 3 * (i - 1)
        local key = ARGV[base + 1]
        if key == '' then
            adding = adding + 1
        else
            local holder = mine[key] or add.key_of[key] or redis.call('HGET', K_KEYS, key)
            if holder then
                holders[i] = holder
            else
                mine[key] = ARGV[base]
                adding = adding + 1
            end
        end
    end
    local next_at = first + 3 * n
    -- A lone duplicate adds nothing, so it is answered even when the queue is full.
    if max_depth > 0 and not (n == 1 and adding == 0) then
        if not add.held then
            add.held = redis.call('LLEN', K_READY) + redis.call('ZCARD', K_DELAYED)
        end
        local held = add.held + add.count
        if held + adding > max_depth then
            return next_at, { 'full', max_depth, held, adding }
        end
    end
    local dups = {}
    for i = 1, n do
        local base = first + 3 * (i - 1)
        local id, key = ARGV[base], ARGV[base + 1]
        if holders[i] then
            dups[#dups + 1] = i
            dups[#dups + 1] = holders[i]
        else
            add.bodies[#add.bodies + 1] = id
            add.bodies[#add.bodies + 1] = ARGV[base + 2]
            if key ~= '' then
                add.key_of[key] = id
                add.keys[#add.keys + 1] = key
                add.keys[#add.keys + 1] = id
                add.keyof[#add.keyof + 1] = id
                add.keyof[#add.keyof + 1] = key
            end
            if delay == 0 then
                add.ready[#add.ready + 1] = id
            else
                add.delayed[#add.delayed + 1] = now + delay
                add.delayed[#add.delayed + 1] = id
                note_due(now + delay)
            end
        end
    end
    add.count = add.count + adding
    return next_at, { 'ok', dups }
end

-- enqueue: ARGV[5] the number of requests, then each request's items (see enqueue_group),
-- taken in order, each on its own: requests that arrived together on one replica share a call.
-- Reply: ..., one result per request.
function ops.enqueue()
    local _, max_attempts, max_depth = config()
    sweep(max_attempts)
    add = { bodies = {}, ready = {}, delayed = {}, keys = {}, keyof = {}, key_of = {}, count = 0 }
    local results = {}
    local at = 6
    for g = 1, tonumber(ARGV[5]) do
        at, results[g] = enqueue_group(at, max_depth)
    end
    chunked('HSET', K_ITEMS, add.bodies, 2)
    chunked('HSET', K_KEYS, add.keys, 2)
    chunked('HSET', K_KEYOF, add.keyof, 2)
    chunked('RPUSH', K_READY, add.ready)
    chunked('ZADD', K_DELAYED, add.delayed, 2)
    incr('enqueued', add.count)
    readied = readied + #add.ready
    return reply('ok', results)
end

-- One request's hand-out, from ARGV[at]: max, lease ('' = kuard's dequeue, removed for good;
-- 'default'; or ms), wait (ms; > 0: a long poll will wait for items), consumer ('' = did not
-- say), then `max` lease ids when leasing. Returns the next request's position and the result: {'ok', deadline, {id, body,
-- lease or '', attempt, ...}}, or {'empty' or 'paused', ready, leased, delayed}.
local function dequeue_group(at, lease_default, paused)
    local max, lease_arg, wait = tonumber(ARGV[at]), ARGV[at + 1], tonumber(ARGV[at + 2])
    local consumer = ARGV[at + 3]
    local next_at = at + 4
    if lease_arg ~= '' then
        next_at = next_at + max
    end
    if paused then
        return next_at, { 'paused', redis.call('LLEN', K_READY), redis.call('HLEN', K_LEASES),
            redis.call('ZCARD', K_DELAYED) }
    end
    local ids = redis.call('LPOP', K_READY, max)
    if not ids then
        if wait > 0 then
            local until_ms = now + wait
            if wait_until < until_ms then
                wait_until = until_ms
                redis.call('HSET', K_META, 'wait_until', until_ms)
            end
        end
        return next_at, { 'empty', redis.call('LLEN', K_READY), redis.call('HLEN', K_LEASES),
            redis.call('ZCARD', K_DELAYED) }
    end
    incr('dequeued', #ids)
    local out = {}
    if lease_arg == '' then
        local keyed = redis.call('HLEN', K_KEYOF) > 0
        for _, id in ipairs(ids) do
            out[#out + 1] = id
            out[#out + 1] = redis.call('HGET', K_ITEMS, id) or ''
            out[#out + 1] = ''
            out[#out + 1] = 0
            if keyed then
                release(id)
            end
        end
        forget(ids)
        return next_at, { 'ok', 0, out }
    end
    local lease_ms = lease_default
    if lease_arg ~= 'default' then
        lease_ms = tonumber(lease_arg)
    end
    local deadline = now + lease_ms
    local leases, deadlines, holders = {}, {}, {}
    for i, id in ipairs(ids) do
        local lease = ARGV[at + 3 + i]
        local attempt = redis.call('HINCRBY', K_ATTEMPTS, id, 1)
        leases[#leases + 1] = lease
        leases[#leases + 1] = id
        if consumer ~= '' then
            holders[#holders + 1] = lease
            holders[#holders + 1] = consumer
        end
        deadlines[#deadlines + 1] = deadline
        deadlines[#deadlines + 1] = lease
        out[#out + 1] = id
        out[#out + 1] = redis.call('HGET', K_ITEMS, id) or ''
        out[#out + 1] = lease
        out[#out + 1] = attempt
    end
    chunked('HSET', K_LEASES, leases, 2)
    chunked('ZADD', K_DEADLINES, deadlines, 2)
    if #holders > 0 then
        chunked('HSET', K_HOLDERS, holders, 2)
        if META[7] ~= '1' then
            META[7] = '1'
            redis.call('HSET', K_META, 'named', '1')
        end
        if redis.call('HINCRBY', K_HOLDERS, '#' .. consumer, #holders / 2) == #holders / 2 then
            redis.call('HINCRBY', K_META, 'consumers', 1)
        end
    end
    note_due(deadline)
    return next_at, { 'ok', deadline, out }
end

-- dequeue: ARGV[5] the number of requests, then each request's part (see dequeue_group),
-- served in order: requests that arrived together on one replica share a call. Reply: ...,
-- one result per request.
function ops.dequeue()
    local lease_default, max_attempts, _, paused = config()
    sweep(max_attempts)
    local results = {}
    local at = 6
    for g = 1, tonumber(ARGV[5]) do
        at, results[g] = dequeue_group(at, lease_default, paused)
    end
    return reply('ok', results)
end

-- Ends the live leases among ARGV[from..]: their statuses (200, 404 or 410) in order, and the
-- items of the live ones in that order.
local function take_leases(from)
    local results, items = {}, {}
    for i = from, #ARGV do
        local lease = ARGV[i]
        local item, status = live(lease)
        if item then
            drop_lease(lease)
            items[#items + 1] = item
            status = 200
        end
        results[#results + 1] = status
    end
    return results, items
end

-- ack: ARGV[5..] lease ids. Reply: ..., {status per lease: 200, 404 or 410}.
function ops.ack()
    local _, max_attempts = config()
    sweep(max_attempts)
    local results, done = take_leases(5)
    for _, item in ipairs(done) do
        release(item)
    end
    forget(done)
    incr('acked', #done)
    return reply('ok', results)
end

-- nack: ARGV[5] delay ms, ARGV[6..] lease ids. Without a delay the items go to the front in the
-- order given (the first one first). Reply: ..., {status per lease: 200, 404 or 410}.
function ops.nack()
    local _, max_attempts = config()
    sweep(max_attempts)
    local delay = tonumber(ARGV[5])
    local results, items = take_leases(6)
    if delay == 0 then
        for i = #items, 1, -1 do
            give_back(items[i], 0, max_attempts)
        end
    else
        for _, item in ipairs(items) do
            give_back(item, delay, max_attempts)
        end
    end
    return reply('ok', results)
end

-- release: ARGV[5..] lease ids of items never started (a consumer's prefetch buffer): to the
-- front in the order given, their delivery not counted as an attempt (so never dead letters).
-- Reply: ..., {status per lease: 200, 404 or 410}.
function ops.release()
    local _, max_attempts = config()
    sweep(max_attempts)
    local results, items = take_leases(5)
    for i = #items, 1, -1 do
        local item = items[i]
        if redis.call('HINCRBY', K_ATTEMPTS, item, -1) <= 0 then
            redis.call('HDEL', K_ATTEMPTS, item)
        end
        redis.call('LPUSH', K_READY, item)
    end
    incr('requeued', #items)
    readied = readied + #items
    return reply('ok', results)
end

-- extend_many: ARGV[5] lease ms or 'default', ARGV[6..] lease ids.
-- Reply: ..., {status, new deadline (0 unless 200), ...} per lease.
function ops.extend_many()
    local lease_default, max_attempts = config()
    sweep(max_attempts)
    local lease_ms = lease_default
    if ARGV[5] ~= 'default' then
        lease_ms = tonumber(ARGV[5])
    end
    local deadline = now + lease_ms
    local out = {}
    for i = 6, #ARGV do
        local lease = ARGV[i]
        local item, status = live(lease)
        local until_ms = 0
        if item then
            redis.call('ZADD', K_DEADLINES, deadline, lease)
            note_due(deadline)
            status, until_ms = 200, deadline
        end
        out[#out + 1] = status
        out[#out + 1] = until_ms
    end
    return reply('ok', out)
end

-- extend: ARGV[5] lease, ARGV[6] lease ms or 'default'.
-- Reply: ..., 200, deadline, item id, body, attempt; or 404 / 410.
function ops.extend()
    local lease_default, max_attempts = config()
    sweep(max_attempts)
    local lease = ARGV[5]
    local item, status = live(lease)
    if not item then
        return reply('ok', status)
    end
    local lease_ms = lease_default
    if ARGV[6] ~= 'default' then
        lease_ms = tonumber(ARGV[6])
    end
    local deadline = now + lease_ms
    redis.call('ZADD', K_DEADLINES, deadline, lease)
    note_due(deadline)
    return reply('ok', 200, deadline, item, redis.call('HGET', K_ITEMS, item) or '',
        tonumber(redis.call('HGET', K_ATTEMPTS, item)) or 0)
end

-- dead: ARGV[5] limit. Reply: ..., {id, body, attempts, died at, ...} oldest first.
function ops.dead()
    local _, max_attempts = config()
    sweep(max_attempts)
    local out = {}
    for _, id in ipairs(redis.call('LRANGE', K_DEAD, 0, tonumber(ARGV[5]) - 1)) do
        out[#out + 1] = id
        out[#out + 1] = redis.call('HGET', K_ITEMS, id) or ''
        out[#out + 1] = tonumber(redis.call('HGET', K_ATTEMPTS, id)) or 0
        out[#out + 1] = tonumber(redis.call('HGET', K_DIED, id)) or 0
    end
    return reply('ok', out)
end

-- requeue_dead: every dead letter to the back of the ready items at attempt 0. Reply: count.
function ops.requeue_dead()
    local _, max_attempts = config()
    sweep(max_attempts)
    local ids = redis.call('LRANGE', K_DEAD, 0, -1)
    if #ids > 0 then
        chunked('HDEL', K_ATTEMPTS, ids)
        chunked('HDEL', K_DIED, ids)
        chunked('RPUSH', K_READY, ids)
        redis.call('UNLINK', K_DEAD)
        readied = readied + #ids
    end
    return reply('ok', #ids)
end

-- purge_dead: the dead letters go (their keys start their retention). Reply: count.
function ops.purge_dead()
    local _, max_attempts = config()
    sweep(max_attempts)
    local ids = redis.call('LRANGE', K_DEAD, 0, -1)
    if #ids > 0 then
        for _, id in ipairs(ids) do
            release(id)
        end
        forget(ids)
        chunked('HDEL', K_DIED, ids)
        redis.call('UNLINK', K_DEAD)
        incr('purged', #ids)
    end
    return reply('ok', #ids)
end

-- A running lease as the lease list and the item lookup give it: {lease, item id, attempt,
-- consumer ('' = none), deadline}.
local function held(lease, item, deadline)
    return { lease, item, tonumber(redis.call('HGET', K_ATTEMPTS, item)) or 0,
        (META[7] == '1' and redis.call('HGET', K_HOLDERS, lease)) or '', deadline }
end

-- item: ARGV[5] an item id, or '' and ARGV[6] a producer key. Reply: ..., 'none'; or state, id,
-- attempts, then for 'ready' how many are ahead, for 'delayed' when it is ready, for 'dead' when
-- it died, for 'leased' its lease (see `held`). Walks the ready list (LPOS) or the lease hash: a
-- look for people.
function ops.item()
    local _, max_attempts = config()
    sweep(max_attempts)
    local id = ARGV[5]
    if id == '' then
        id = redis.call('HGET', K_KEYS, ARGV[6])
    end
    if not id or redis.call('HEXISTS', K_ITEMS, id) == 0 then
        return reply('ok', 'none')
    end
    local attempts = tonumber(redis.call('HGET', K_ATTEMPTS, id)) or 0
    local position = redis.call('LPOS', K_READY, id)
    if position then
        return reply('ok', 'ready', id, attempts, position)
    end
    local at = redis.call('ZSCORE', K_DELAYED, id)
    if at then
        return reply('ok', 'delayed', id, attempts, tonumber(at))
    end
    local died = redis.call('HGET', K_DIED, id)
    if died then
        return reply('ok', 'dead', id, attempts, tonumber(died))
    end
    local leases = redis.call('HGETALL', K_LEASES)
    for i = 1, #leases, 2 do
        if leases[i + 1] == id then
            local lease = leases[i]
            local deadline = tonumber(redis.call('ZSCORE', K_DEADLINES, lease)) or 0
            return reply('ok', 'leased', id, attempts, held(lease, id, deadline))
        end
    end
    return reply('ok', 'none')
end

-- leases: ARGV[5] limit. Reply: ..., {held lease, ...} (see `held`): of the running leases, the
-- `limit` that run out soonest, listed oldest first (lease ids sort in the order they were
-- made). O(log n + limit): a range of the deadlines.
function ops.leases()
    local _, max_attempts = config()
    sweep(max_attempts)
    local found = redis.call('ZRANGEBYSCORE', K_DEADLINES, '(' .. now, '+inf', 'WITHSCORES',
        'LIMIT', 0, tonumber(ARGV[5]))
    local running = {}
    for i = 1, #found, 2 do
        running[#running + 1] = { found[i], tonumber(found[i + 1]) }
    end
    table.sort(running, function(a, b) return a[1] < b[1] end)
    local out = {}
    for _, l in ipairs(running) do
        local item = redis.call('HGET', K_LEASES, l[1])
        if item then
            out[#out + 1] = held(l[1], item, l[2])
        end
    end
    return reply('ok', out)
end

-- peek: ARGV[5] limit. Reply: ..., {id, body, ...} in hand-out order, not leased.
function ops.peek()
    local _, max_attempts = config()
    sweep(max_attempts)
    local out = {}
    for _, id in ipairs(redis.call('LRANGE', K_READY, 0, tonumber(ARGV[5]) - 1)) do
        out[#out + 1] = id
        out[#out + 1] = redis.call('HGET', K_ITEMS, id) or ''
    end
    return reply('ok', out)
end

-- Brings the queue from layout `from` up to LAYOUT.
-- 1 -> 2: the queue records its layout; nothing else changed (0.1.0's replicas, which never
-- read it, serve a queue of layout 2 as they did one of layout 1).
local function migrate(from)
    if from < 2 then
        redis.call('HSET', K_META, 'layout', 2)
    end
end

-- One call: this call's state, then its op.
local function call(keys, args)
    KEYS, ARGV = keys, args
    K_META, K_ITEMS, K_ATTEMPTS, K_READY, K_DELAYED, K_LEASES, K_DEADLINES, K_DEAD, K_DIED,
        K_KEYS, K_KEYOF, K_RELEASED, K_EXPIRED, K_HOLDERS = unpack(keys)
    OP, CHANNEL, ORIGIN, QUEUE = args[1], args[2], args[3], args[4]
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    readied, wake_all, more, changed, due_changed = 0, false, 0, false, false
    META = redis.call('HMGET', K_META, 'lease_ms', 'max_attempts', 'max_depth', 'paused', 'due',
        'wait_until', 'named', 'layout')
    next_due = tonumber(META[5]) or 0
    wait_until = tonumber(META[6]) or 0
    local op = ops[OP]
    if not op then
        return redis.error_reply('memq: unknown op ' .. tostring(OP))
    end
    local layout = tonumber(META[8]) or 1
    if layout > LAYOUT then
        return redis.error_reply('MEMQ_LAYOUT ' .. layout)
    end
    if OP ~= 'create' and not META[1] then
        return missing()
    end
    if META[1] and layout < LAYOUT then
        migrate(layout)
    end
    return op()
end

-- Two names for the one entry point. `create` and `enqueue` go through the first, which Redis
-- refuses while it is at its maxmemory (the 507 of an enqueue); every other op frees memory or
-- moves items, and goes through the second, which runs then too.
redis.register_function('{{LIBRARY}}', call)
redis.register_function { function_name = '{{LIBRARY}}_oom', callback = call, flags = { 'allow-oom' } }

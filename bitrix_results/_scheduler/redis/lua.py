"""The Redis backend's Lua scripts: every decision on shared state, one round trip each.

Each script reads and writes only keys of one hash slot (design §2.5: a
portal's bucket is one key; a credential's budget keys share the hash tag of
the credential), so they run unchanged on Redis Cluster. Times come from the
Redis server's ``TIME`` (one clock for every host) unless the caller passes
its own (tests on virtual time).

The budget scripts are a line-for-line port of ``_scheduler/budget.py``'s pure functions
(``try_admit``, ``_verdict``, ``_expire_flights``, ``settle``, ``_observe``);
``tests/unit/test_redis_lua.py`` runs both on random sequences and compares
the states, so the two cannot drift apart.

Numbers cross the boundary as strings written with ``%.17g`` (exact doubles):
Lua numbers in a script's reply would be truncated to integers. A reply is one
string, its fields joined by ``|``: one bulk string parses much faster in the
client than an array of a dozen.

Budget state (one hash per key, ``{prefix}:{c:credential}:budget:method``):
``tracked`` (absent, "0", "1"), ``total``, ``raw_reset``, ``reset_at``,
``reset_integral`` ("1"), ``cost_num``, ``cost_den``, ``pending``,
``held_until`` and ``probe``. Its flights (``...:flights:method``): ticket ->
"units expires". Its waiters (``...:waiters:method``): a list of "process-token
ticket", one per caller refused until the key changes, in order; a settle pops
one and wakes a caller of that process only (waking every process would send
a round trip from each, all but one refused again).
"""

from __future__ import annotations

__all__ = ["ADMIT", "BUCKET", "HEARTBEAT", "SETTLE"]

_PRELUDE = """
local function clock(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return tonumber(arg)
end
local function fmt(x)
  if x == nil then return '' end
  return string.format('%.17g', x)
end
local function opt(x)
  if x == nil or x == false or x == '' then return nil end
  return tonumber(x)
end
"""

# The budget's helpers, shared by ADMIT and SETTLE.
_BUDGET = (
    _PRELUDE
    + """
local PESSIMISM = 1.5
local DECAY = 0.95
local SAME = 1e-6

local function load(key)
  local raw = redis.call('HGETALL', key)
  local s = {}
  for i = 1, #raw, 2 do s[raw[i]] = raw[i + 1] end
  return {
    tracked = s.tracked,
    total = opt(s.total), raw_reset = opt(s.raw_reset), reset_at = opt(s.reset_at),
    reset_integral = s.reset_integral == '1',
    cost_num = opt(s.cost_num) or 0, cost_den = opt(s.cost_den) or 0,
    pending = opt(s.pending) or 0, held_until = opt(s.held_until),
    probe = s.probe,
  }
end

local function save(key, st, ttl)
  redis.call('DEL', key)
  local f = {'cost_num', fmt(st.cost_num), 'cost_den', fmt(st.cost_den),
             'pending', fmt(st.pending)}
  local function put(name, value) f[#f + 1] = name; f[#f + 1] = value end
  if st.tracked then put('tracked', st.tracked) end
  if st.total then put('total', fmt(st.total)) end
  if st.raw_reset then put('raw_reset', fmt(st.raw_reset)) end
  if st.reset_at then put('reset_at', fmt(st.reset_at)) end
  if st.reset_integral then put('reset_integral', '1') end
  if st.held_until then put('held_until', fmt(st.held_until)) end
  if st.probe then put('probe', st.probe) end
  redis.call('HSET', key, unpack(f))
  redis.call('PEXPIRE', key, ttl)
end

-- Flights: drop the expired ones (a dead process's), count the rest. Like
-- budget.py, only an admission expires them (now = nil: count them all).
local function flights(key, st, now)
  local raw = redis.call('HGETALL', key)
  local count, units, expired = 0, 0, {}
  for i = 1, #raw, 2 do
    local u, e = string.match(raw[i + 1], '^(%S+) (%S+)$')
    if now ~= nil and tonumber(e) <= now then
      expired[#expired + 1] = raw[i]
    else
      count = count + 1
      units = units + tonumber(u)
    end
  end
  if #expired > 0 then redis.call('HDEL', key, unpack(expired)) end
  local probe_gone = false
  if now ~= nil and st.probe and redis.call('HEXISTS', key, st.probe) == 0 then
    st.probe = nil
    probe_gone = true
  end
  return count, units, (#expired > 0) or probe_gone
end

local function slack(st, window)
  return (st.reset_integral and 1 or 0) + window / 1000
end

-- budget.py _verdict: admit, probe, retry_at (nil: when a key changes), hold, on_change
local function verdict(st, count, inflight, units, limit, window, now)
  if st.held_until then
    if now < st.held_until then return false, false, st.held_until, nil, false end
    if not st.probe then return true, true end
    return false, false, nil, nil, true
  end
  if st.tracked == nil then
    if count == 0 then return true, true end
    return false, false, nil, nil, true
  end
  if st.tracked == '0' then return true, false end
  local total = st.total or 0
  if st.cost_den <= 0 then
    -- Cost not yet learned: a basket (the longest a request runs) per call.
    if total + (count + 1) * (window / 10) <= limit or (count == 0 and total <= limit) then
      return true, false
    end
    if count > 0 then return false, false, nil, nil, true end
  elseif total + (inflight + units) * (st.cost_num / st.cost_den * PESSIMISM) <= limit then
    return true, false
  end
  local deadline = nil
  if st.reset_at then
    deadline = st.reset_at + slack(st, window)
    if now >= deadline then
      if not st.probe then return true, true end
      return false, false, nil, nil, true
    end
  end
  if count > 0 then return false, false, deadline, nil, true end
  local hold = math.min(deadline or (now + window / 10), now + window)
  return false, false, hold, hold, false
end

local function stats(out, st, inflight)
  out[#out + 1] = st.tracked or ''
  out[#out + 1] = fmt(st.total)
  out[#out + 1] = fmt(st.reset_at)
  out[#out + 1] = fmt(st.cost_num)
  out[#out + 1] = fmt(st.cost_den)
  out[#out + 1] = fmt(st.held_until)
  out[#out + 1] = tostring(inflight)
end
"""
)

# KEYS: state1, flights1, waiters1, state2, flights2, waiters2, ...
# ARGV: now, ticket, lease, limit, window, ttl ms, process token, units1, units2, ...
# Returns, joined by |: {admitted "1"/"0", retry_at ("" = on a change), on_change "1"/"0",
#          blocked key indexes "1,2", now, then 7 statistics per key}.
ADMIT = (
    _BUDGET
    + """
local now = clock(ARGV[1])
local ticket, lease = ARGV[2], tonumber(ARGV[3])
local limit, window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n = #KEYS / 3
local entry = ARGV[7] .. ' ' .. ticket
local states, counts, inflights, verdicts, dirty = {}, {}, {}, {}, {}
local admit = true
for i = 1, n do
  local st = load(KEYS[3 * i - 2])
  local count, inflight, changed = flights(KEYS[3 * i - 1], st, now)
  local a, p, r, h, c = verdict(st, count, inflight, tonumber(ARGV[7 + i]), limit, window, now)
  states[i], counts[i], inflights[i], dirty[i] = st, count, inflight, changed
  verdicts[i] = {a, p, r, h, c}
  admit = admit and a
end
local out = {}
if admit then
  for i = 1, n do
    local units = tonumber(ARGV[7 + i])
    redis.call('HSET', KEYS[3 * i - 1], ticket, fmt(units) .. ' ' .. fmt(now + lease))
    redis.call('PEXPIRE', KEYS[3 * i - 1], ttl)
    inflights[i] = inflights[i] + units
    if verdicts[i][2] then states[i].probe = ticket; dirty[i] = true end
    -- No longer waiting (woken by its own process, its entry is still queued).
    redis.call('LREM', KEYS[3 * i], 1, entry)
  end
  out = {'1', fmt(now), '1', '', fmt(now)}
else
  local retry, on_change, blocked = nil, true, {}
  for i = 1, n do
    local v, st = verdicts[i], states[i]
    if v[4] then st.held_until = v[4]; dirty[i] = true end
    if not v[1] then
      if v[3] and (retry == nil or v[3] < retry) then retry = v[3] end
      on_change = on_change and v[5]
      blocked[#blocked + 1] = tostring(i)
      -- This caller waits for the key to change: once in the queue, at its
      -- end; a settle pops the first. Capped: a caller left out is still
      -- woken by its process's admissions, or its periodic look.
      if v[5] then
        redis.call('LREM', KEYS[3 * i], 1, entry)
        redis.call('RPUSH', KEYS[3 * i], entry)
        redis.call('LTRIM', KEYS[3 * i], -1024, -1)
        redis.call('PEXPIRE', KEYS[3 * i], ttl)
      end
    end
  end
  out = {'0', fmt(retry), on_change and '1' or '0', table.concat(blocked, ','), fmt(now)}
end
for i = 1, n do
  if dirty[i] then save(KEYS[3 * i - 2], states[i], ttl) end
  stats(out, states[i], inflights[i])
end
return table.concat(out, '|')
"""
)

# KEYS: state1, flights1, waiters1, ...
# ARGV: now, ticket, kind, replayed, has time ("1"/""), operating, reset_at,
#       start, finish, limit, window, ttl ms, channel prefix, process token, units1, ...
# Returns, joined by |: {now, then 7 statistics per key, then the indexes "1,2"
#          of the keys whose popped waiter is the caller's own process}.
SETTLE = (
    _BUDGET
    + """
local now = clock(ARGV[1])
local ticket, kind, replayed = ARGV[2], ARGV[3], ARGV[4] == '1'
local has_time = ARGV[5] == '1'
local limit, window, ttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])

-- budget.py: NaN and infinities are no numbers.
local function finite(x)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end
local operating, raw = finite(opt(ARGV[6])), finite(opt(ARGV[7]))
local start, finish = finite(opt(ARGV[8])), finite(opt(ARGV[9]))

local function anchor(st, total, r, loc)
  st.total = total
  st.raw_reset = r
  st.reset_at = loc
  st.reset_integral = r ~= nil and r == math.floor(r)
  st.pending = 0
end

local function learn(st, increase, units)
  if units <= 0 then return end
  st.cost_num = st.cost_num * DECAY + increase
  st.cost_den = st.cost_den * DECAY + units
end

-- budget.py _observe: learn from a reply's time block; false when it was stale.
local function observe(st, units)
  if not has_time or operating == nil or operating < 0 then
    if st.tracked == nil then st.tracked = '0' end
    return true
  end
  st.tracked = '1'
  -- budget.py _reset_of: a reset is at most one window ahead of its origin
  -- (a second more when integral: the portal's rounding).
  local loc, raw = nil, raw  -- a local copy: every key of the call reads the same reply
  if raw ~= nil then
    local origin = start or finish or now
    local ahead = raw - origin
    local most = window
    if raw % 1 == 0 then most = window + 1 end
    if ahead > most then
      ahead = window
      raw = nil  -- impossible: no basket generation, only when to look again
    end
    loc = now + ahead
  end
  if st.total == nil then anchor(st, operating, raw, loc); return true end
  if raw ~= nil and st.raw_reset ~= nil then
    if raw < st.raw_reset - SAME then return false end
    if raw > st.raw_reset + SAME then anchor(st, operating, raw, loc); return true end
    if loc ~= nil and st.reset_at ~= nil then st.reset_at = math.min(st.reset_at, loc) end
  elseif raw ~= nil then
    local kept = math.max(operating, st.total)
    if st.reset_at ~= nil and now >= st.reset_at then kept = operating end
    anchor(st, kept, raw, loc)
    return true
  end
  if operating >= st.total then
    local calls = st.pending + units
    learn(st, math.min(operating - st.total, window / 10 * calls), calls)
    st.pending = 0
    st.total = operating
  elseif raw == nil then
    anchor(st, operating, nil, nil)
  else
    st.pending = st.pending + units
  end
  return true
end

local function hold_after_429(st)
  local hold = now + window / 10
  if st.reset_at then
    local deadline = st.reset_at + slack(st, window)
    if deadline > now then hold = deadline end
  end
  st.held_until = math.min(math.max(st.held_until or hold, hold), now + window)
end

local out, own = {fmt(now)}, {}
for i = 1, #KEYS / 3 do
  local units = tonumber(ARGV[14 + i])
  local st = load(KEYS[3 * i - 2])
  local was_probe = st.probe == ticket
  if was_probe then st.probe = nil end
  redis.call('HDEL', KEYS[3 * i - 1], ticket)
  local _, inflight = flights(KEYS[3 * i - 1], st, nil)
  if kind == 'replied' then
    if not replayed then
      local informative = observe(st, units)
      if was_probe and informative then st.held_until = nil end
    end
  elseif kind == 'operating_limit' then
    hold_after_429(st)
  end
  -- One settle, one waiter woken (like backends.Waiters in one process): the
  -- one it admits wakes the next of its own process.
  local waiter = redis.call('LPOP', KEYS[3 * i])
  if waiter then
    local process = string.match(waiter, '^(%S+)')
    if process == ARGV[14] then
      own[#own + 1] = tostring(i)
    else
      redis.call('PUBLISH', ARGV[13] .. process, KEYS[3 * i - 2])
    end
  end
  save(KEYS[3 * i - 2], st, ttl)
  stats(out, st, inflight)
end
out[#out + 1] = table.concat(own, ',')
return table.concat(out, '|')
"""
)

# KEYS: flights keys of one slot. ARGV: now, lease, ticket1, ticket2, ...
# Renews the lease of every listed ticket still in flight (the heartbeat).
HEARTBEAT = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local expires = fmt(now + tonumber(ARGV[2]))
local renewed = 0
for _, key in ipairs(KEYS) do
  for i = 3, #ARGV do
    local flight = redis.call('HGET', key, ARGV[i])
    if flight then
      local units = string.match(flight, '^(%S+) ')
      redis.call('HSET', key, ARGV[i], units .. ' ' .. expires)
      renewed = renewed + 1
    end
  end
end
return renewed
"""
)

# KEYS[1]: the bucket hash.
# ARGV: op (reserve | limited | succeeded), capacity, nominal drain per second,
#       now, ticket (limited only), decrease factor, floor factor, step,
#       expected ("1": this process saw the bucket alive, so a missing key was
#       evicted or lost in a restart: start it full rather than empty), process
#       token, the epoch this process last saw ("" = none), its reservations
#       still waiting for their turn.
# Returns, joined by |: {wait, level, effective drain, time used, "1" if found
#          missing, epoch (who created this bucket when: changes when recreated)}.
BUCKET = (
    _PRELUDE
    + """
local op = ARGV[1]
local capacity = tonumber(ARGV[2])
local nominal = tonumber(ARGV[3])
local now = clock(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'level', 'last', 'factor', 'decreased_at', 'epoch')
local lost = '0'
local level = tonumber(s[1])
local epoch = s[5]
if level == nil then
  level = 0
  epoch = ARGV[10] .. '@' .. fmt(now)
  if ARGV[9] == '1' then
    -- The bucket existed a moment ago: whatever it held is unknown, assume full
    -- (one burst's worth of waiting, not a new burst).
    level = capacity
    lost = '1'
  end
end
local last = tonumber(s[2]) or now
local factor = tonumber(s[3]) or 1
local decreased_at = tonumber(s[4]) or -1
-- A bucket recreated since this process last saw it: its reservations queued
-- in the lost one still go at their time, so they take their places in the
-- line again, once per process (before this call's own reservation).
local known, mark = ARGV[11], 'requeued:' .. ARGV[10]
if known ~= '' and known ~= epoch and redis.call('HEXISTS', KEYS[1], mark) == 0 then
  level = level + tonumber(ARGV[12])
  redis.call('HSET', KEYS[1], mark, '1')
end
-- A clock that steps back (another host's, with client time) must not refill.
local t = math.max(now, last)
local rate = nominal * factor
level = math.max(0, level - (t - last) * rate)
local wait = 0
if op == 'reserve' then
  -- Queue even when full: the caller sends when the level has drained back
  -- to capacity - 1, so reservations are served in order at the drain rate.
  level = level + 1
  wait = math.max(0, (level - capacity) / rate) + (t - now)
elseif op == 'limited' then
  -- 503: the portal is at least full.
  level = math.max(level, capacity)
  if tonumber(ARGV[5]) >= decreased_at then
    factor = math.max(tonumber(ARGV[7]), factor * tonumber(ARGV[6]))
    decreased_at = t
  end
elseif op == 'succeeded' then
  factor = math.min(1, factor + tonumber(ARGV[8]))
end
rate = nominal * factor
redis.call('HSET', KEYS[1], 'level', fmt(level), 'last', fmt(t),
           'factor', fmt(factor), 'decreased_at', fmt(decreased_at), 'epoch', epoch)
-- Forget an idle bucket once it has drained (and a minute more).
redis.call('PEXPIRE', KEYS[1], math.ceil((level / rate + 60) * 1000))
return table.concat({fmt(wait), fmt(level), fmt(rate), fmt(t), lost, epoch}, '|')
"""
)

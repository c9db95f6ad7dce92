"""The Lua scripts of :class:`~orchestrator.stores.redis.runs.RunState`.

A change that must read before it writes (claim a step, finish it, park or resume a message,
release or renew a lease, end the run) is one script: atomic, and one round trip. Each script
lists the ``KEYS`` and ``ARGV`` it is called with.
"""

from __future__ import annotations

CLAIM = """
-- KEYS: ctl, res, lease, deliveries, retry, attempt, start
-- ARGV: step, owner, lease ms, ttl, steal (a dead holder), delivery field, attempt, now (epoch
--       seconds), parents...
local flag = redis.call('GET', KEYS[1])
if flag then return {'flag', flag} end
local done = redis.call('HGET', KEYS[2], ARGV[1])
if done then return {'done', done} end
local current = redis.call('HGET', KEYS[6], ARGV[1])
if current and tonumber(current) > tonumber(ARGV[7]) then return {'stale', current} end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[2] and holder ~= ARGV[5] then return {'busy', holder} end
local out = {'go', '0'}
for i = 9, #ARGV do
  local v = redis.call('HGET', KEYS[2], ARGV[i])
  if not v then return {'missing', ARGV[i]} end
  table.insert(out, v)
end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
out[2] = tostring(redis.call('HINCRBY', KEYS[4], ARGV[6], 1))
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('DEL', KEYS[5])
redis.call('HSETNX', KEYS[7], ARGV[1], ARGV[8])
redis.call('EXPIRE', KEYS[7], ARGV[4])
return out
"""

FINISH = """
-- KEYS: res, lease, fin, join sets...
-- ARGV: step, encoded result, ttl, owner, finished at (epoch seconds)
-- returns, per join set: 1 if the step was added (0 if already counted), then the set's size
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local out = {}
for i = 4, #KEYS do
  table.insert(out, redis.call('SADD', KEYS[i], ARGV[1]))
  table.insert(out, redis.call('SCARD', KEYS[i]))
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return out
"""

PARK = """
-- KEYS: ctl, parked
-- ARGV: encoded signature, ttl
if redis.call('GET', KEYS[1]) ~= 'paused' then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

RESUME = """
-- KEYS: ctl, parked
if redis.call('GET', KEYS[1]) == 'paused' then redis.call('DEL', KEYS[1]) end
local parked = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return parked
"""

RELEASE = """
-- KEYS: lease
-- ARGV: owner
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

RENEW = """
-- KEYS: leases...
-- ARGV: lease ms, the owner of each lease...
local n = 0
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1]); n = n + 1
  elseif not holder then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1]); n = n + 1
  end
end
return n
"""

END = """
-- KEYS: ctl, res, deliveries, parked, attempt, fin, start
-- ARGV: final status, ttl of the kept flag (and of a failed or cancelled run's results)
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
if ARGV[1] == 'succeeded' then
  redis.call('DEL', KEYS[2])
else
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
"""

LAPSED = """
-- KEYS: deliveries, res, attempt (of one run)
-- ARGV: the prefix of the run's lease keys (a lease key is it and a deliveries field)
-- returns step, attempt of each claimed attempt with no result, no lease and no later attempt
local out = {}
local claimed = redis.call('HGETALL', KEYS[1])
for i = 1, #claimed, 2 do
  local step, attempt = string.match(claimed[i], '^(.*):(%d+)$')
  if step and tonumber(claimed[i + 1]) > 0 and redis.call('HEXISTS', KEYS[2], step) == 0
      and redis.call('EXISTS', ARGV[1] .. claimed[i]) == 0 then
    local current = redis.call('HGET', KEYS[3], step)
    if not current or tonumber(current) <= tonumber(attempt) then
      table.insert(out, step)
      table.insert(out, attempt)
    end
  end
end
return out
"""

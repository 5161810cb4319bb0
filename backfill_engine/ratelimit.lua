-- Global token bucket shared by every worker on every host, plus a pause (429 Retry-After).
--
-- KEYS[1]  the bucket: a hash with
--            tokens       tokens left after the last refill (may be fractional)
--            ts           server time (microseconds) of the last refill
--            pause_until  server time (microseconds) before which nothing is granted
-- ARGV[1]  operation: "acquire", "pause" or "peek"
-- ARGV[2]  rate, tokens per second (> 0)
-- ARGV[3]  burst, the bucket's capacity in tokens (>= 1)
-- ARGV[4]  acquire: tokens wanted; pause: seconds to pause; peek: ignored
-- KEYS[2]  optional: the bucket's rate controller hash (rate_control.py); when ARGV[5] is
--          "1" and it holds a `rate`, that rate replaces ARGV[2], so every worker follows
--          the controller at once. It lives apart from KEYS[1] because KEYS[1] expires
--          whenever the bucket is full, and the controller's rate must not go with it.
--
-- acquire -> 0 when the tokens were taken, else the microseconds to wait before trying
--            again (nothing is taken then, so a caller may give up without leaking tokens)
-- pause   -> microseconds until the (possibly longer, pre-existing) pause ends
-- peek    -> microseconds until the current pause ends (0 when not paused)
--
-- Time comes from Redis' TIME, never from the callers: hosts' clocks disagree, the
-- server's is one clock for everyone. Redis >= 5 replicates script effects, not the
-- script, so a non-deterministic TIME is allowed before writes.

local key = KEYS[1]
local op = ARGV[1]
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local arg = tonumber(ARGV[4])
if ARGV[5] == '1' and KEYS[2] then
  local live = tonumber(redis.call('HGET', KEYS[2], 'rate'))
  if live and live > 0 then
    rate = live
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local state = redis.call('HMGET', key, 'tokens', 'ts', 'pause_until')
-- An absent key is a full bucket: expiry below only ever drops a bucket that is full.
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
local pause_until = tonumber(state[3]) or 0

-- Keep the key until the bucket would be full again and any pause is over (plus a
-- margin); after that its absence means exactly the same thing, so nothing leaks.
local function save(tok, stamp, until_us)
  redis.call('HSET', key, 'tokens', tok, 'ts', stamp, 'pause_until', until_us)
  local refill_us = math.max(0, (burst - tok) / rate * 1000000) + math.max(0, stamp - now)
  local pause_us = math.max(0, until_us - now)
  local ttl_ms = math.ceil((math.max(refill_us, pause_us)) / 1000) + 60000
  redis.call('PEXPIRE', key, ttl_ms)
end

if op == 'peek' then
  return math.max(0, pause_until - now)
end

if op == 'pause' then
  local until_us = now + math.floor(arg * 1000000)
  if until_us > pause_until then
    -- Empty the bucket and start refilling only when the pause ends, so the moment
    -- it lifts is not a burst of every waiting worker at once.
    save(0, until_us, until_us)
    return until_us - now
  end
  -- Never shorten a longer pause already in place.
  return pause_until - now
end

-- acquire
if pause_until > now then
  return pause_until - now
end
-- Refill for the time elapsed; `ts` may lie in the future right after a pause.
local elapsed = math.max(0, now - ts)
tokens = math.min(burst, tokens + elapsed * rate / 1000000)
local stamp = math.max(ts, now)
if tokens >= arg then
  save(tokens - arg, stamp, pause_until)
  return 0
end
save(tokens, stamp, pause_until)
-- Round up: waking a microsecond early would only buy another round trip.
return math.ceil((arg - tokens) / rate * 1000000)

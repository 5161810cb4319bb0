-- Take or keep a lock that one holder renews: the rate controller's election.
--
-- KEYS[1]  the lock key; its value is the holder's id
-- ARGV[1]  this caller's id
-- ARGV[2]  lease in milliseconds
--
-- -> 1 when the caller holds the lock now (taken or renewed), 0 when someone else does.
-- One script so that "is it still mine?" and "extend it" cannot be split by another
-- holder taking it over in between.

local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0

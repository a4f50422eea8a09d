-- A room's epoch and newest messages, read in one atomic step.
--
-- KEYS: 1 epoch, 2 history stream
-- ARGV: 1 fresh epoch (used if the room has none yet), 2 how many messages
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return {epoch, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])}

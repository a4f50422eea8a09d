-- Publish one message into a room shared by every threadcast instance.
-- Runs atomically inside Redis: numbering, de-duplication, history and broadcast
-- happen in one step, so every instance sees the same ids in the same order.
--
-- KEYS: 1 epoch, 2 sequence, 3 history stream, 4 channel, 5 client-id key
-- ARGV: 1 fresh epoch (used if the room has none yet), 2 timestamp, 3 kind (t|b),
--       4 origin instance, 5 late (1 = already delivered by its origin),
--       6 client id ('' = none), 7 payload, 8 history length, 9 client-id lifetime (s),
--       10 the tag line: the client id, and who sent it (see src/redis_link/wire.rs)
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local cid = ARGV[6]
if cid ~= '' then
  local first = redis.call('GET', KEYS[5])
  if first then
    return {epoch, tonumber(first), 1} -- a repeat: answer with the first copy's id
  end
end
local id = redis.call('INCR', KEYS[2])
if cid ~= '' then
  redis.call('SET', KEYS[5], id, 'EX', ARGV[9])
end
-- The same bytes go to the history and to the subscribers (see src/redis_link/wire.rs).
local message = epoch .. ' ' .. id .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' ..
  ARGV[4] .. ' ' .. ARGV[5] .. '\n' .. ARGV[10] .. '\n' .. ARGV[7]
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'm', message)
redis.call('PUBLISH', KEYS[4], message)
return {epoch, id, 0}

-- RedisTokenStore.Put, atomically: see putScript in tokenstore_redis.go for
-- KEYS, ARGV and the reply.

-- older(a, b): whether expiry a (Unix ns, a decimal string) is before b.
-- Compared as strings, not numbers: Lua's doubles cannot hold nanoseconds
-- exactly.
local function older(a, b) return #a < #b or (#a == #b and a < b) end
local holder = redis.call('GET', KEYS[2])
local ok = holder == ARGV[1]
if not holder then
	local ep = redis.call('HMGET', KEYS[3], 'e', 'id', 'dead')
	local cur = redis.call('HGET', KEYS[1], 'e')
	if ep[1] then
		ok = older(ep[1], ARGV[3]) or (ep[1] == ARGV[3] and ep[2] == ARGV[4] and not ep[3] and not cur)
	else
		ok = (not cur) or older(cur, ARGV[3])
	end
end
if not ok then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'e', ARGV[3], 'id', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'e', ARGV[3], 'id', ARGV[4])
if holder then redis.call('DEL', KEYS[2]) end
return 1

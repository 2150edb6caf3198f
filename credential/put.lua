-- RedisTokenStore.Put, atomically: see putScript in tokenstore_redis.go
-- for KEYS, ARGV and the reply.
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] or ((not holder) and redis.call('EXISTS', KEYS[1]) == 0) then
	redis.call('DEL', KEYS[1])
	redis.call('HSET', KEYS[1], 'v', ARGV[2], 'e', ARGV[3], 'id', ARGV[4])
	redis.call('PEXPIRE', KEYS[1], ARGV[5])
	if holder then redis.call('DEL', KEYS[2]) end
	return 1
end
return 0

-- RedisTokenStore.Drop, atomically: see dropScript in tokenstore_redis.go for
-- KEYS, ARGV and the reply.
if redis.call('HGET', KEYS[2], 'id') == ARGV[1] then
	redis.call('HSET', KEYS[2], 'dead', '1')
end
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
	redis.call('DEL', KEYS[1])
	return 1
end
return 0

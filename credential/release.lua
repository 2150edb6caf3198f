-- RedisTokenStore.Release, atomically: see releaseScript in tokenstore_redis.go
-- for KEYS, ARGV and the reply.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
	redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
	redis.call('DEL', KEYS[1])
end
return 1

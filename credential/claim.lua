-- RedisTokenStore.Claim, atomically: see claimScript in tokenstore_redis.go
-- for KEYS, ARGV and the reply.
local cur = redis.call('HGET', KEYS[1], 'id')
if not cur then cur = '' end
if cur ~= ARGV[2] then return {2, '', 0} end
local holder = redis.call('GET', KEYS[2])
if (not holder) or holder == ARGV[1] then
	redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
	return {1, '', 0}
end
if string.sub(holder, 1, 1) == '!' then
	return {3, holder, redis.call('PTTL', KEYS[2])}
end
return {0, '', 0}

-- The permission check: may this user run each command in ARGV on the key
-- in KEYS (if any)? Returns '' if so, else the first refused command (and
-- the key), or the command Redis does not know. Running this script at
-- all, by EVAL and by EVALSHA, checks those two and the key.
-- redis.acl_check_cmd is Redis 7's; older servers skip the inner check.
if not redis.acl_check_cmd then return '' end
local key = KEYS[1]
for _, cmd in ipairs(ARGV) do
	local ok, allowed
	if key then
		ok, allowed = pcall(redis.acl_check_cmd, cmd, key)
	else
		ok, allowed = pcall(redis.acl_check_cmd, cmd)
	end
	if not ok then return 'unknown command ' .. cmd end
	if not allowed then
		if key then return cmd .. ' on key ' .. key end
		return cmd
	end
end
return ''

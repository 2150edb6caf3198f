-- The sliding-log budget operation: see slidingScript in redis.go for
-- KEYS, ARGV and the reply.
local key = KEYS[1]
local op = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local rep = ARGV[5]
local seq = ARGV[6]
local othersKnown = tonumber(ARGV[7])
local ownTotal = tonumber(ARGV[8])
local recovering = tonumber(ARGV[11]) == 1
local replicas = tonumber(ARGV[12])

local t
if ARGV[9] ~= '' then
	t = {ARGV[9], ARGV[10]}
else
	t = redis.call('TIME')
end
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cutoff = now - period
local mark = rep .. ':'

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', cutoff))

local function scan()
	local raw = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
	local ats, ns, mine = {}, {}, {}
	local total, own = 0, 0
	for i = 1, #raw, 2 do
		local n = tonumber(string.match(raw[i], ':(%d+)$')) or 1
		ats[#ats + 1] = tonumber(raw[i + 1])
		ns[#ns + 1] = n
		local isMine = string.sub(raw[i], 1, #mark) == mark
		mine[#mine + 1] = isMine
		total = total + n
		if isMine then own = own + n end
	end
	return ats, ns, mine, total, own
end

local ats, ns, mine, total, own = scan()
local wrote = false
if own < ownTotal then
	for i = 13, #ARGV, 3 do
		local at = now - tonumber(ARGV[i + 2])
		if at > cutoff then
			local member = mark .. ARGV[i] .. ':' .. ARGV[i + 1]
			if redis.call('ZADD', key, 'NX', string.format('%d', at), member) == 1 then
				wrote = true
			end
		end
	end
	if wrote then
		ats, ns, mine, total, own = scan()
	end
end

local others = total - own
if othersKnown > others then others = othersKnown end
local eff = own + others
local free = eff < limit
if recovering then
	local share = math.floor(limit / replicas)
	local held = others
	if share > held then held = share end
	if own >= share or own + held + (replicas - 2) * share >= limit then
		free = false
		if eff < limit then eff = limit end
	end
end

local admitted = 0
local add = 0
if op == 1 or op == 3 then
	if free and (op == 1 or eff + count < limit) then
		add = 1
		admitted = 1
	end
elseif op == 2 and count > 0 then
	add = count
end

if add > 0 then
	redis.call('ZADD', key, string.format('%d', now), mark .. seq .. ':' .. add)
	ats[#ats + 1] = now
	ns[#ns + 1] = add
	mine[#mine + 1] = true
	total = total + add
	eff = eff + add
end
if add > 0 or wrote then
	redis.call('PEXPIRE', key, string.format('%d', math.ceil(period / 1000)))
end

local wait = period
if total == 0 and limit > 0 then
	wait = 0
else
	local drop = total - limit + 1
	if drop < 1 then drop = 1 end
	local gone = 0
	for i = 1, #ats do
		gone = gone + ns[i]
		if gone >= drop then
			wait = ats[i] + period - now
			if wait < 0 then wait = 0 end
			break
		end
	end
end
local out = {admitted, eff, wait}
for i = 1, #ats do
	if not mine[i] then
		out[#out + 1] = now - ats[i]
		out[#out + 1] = ns[i]
	end
end
return out

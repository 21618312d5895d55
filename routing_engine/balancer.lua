-- The routing engine's balancer: idempotency, agent selection and counter updates for one tenant,
-- atomically, in one script call. Key names follow shared/redis_keys.py (change both together).
--
-- KEYS[1]  the tenant's key base "<prefix>:{t<tenant>}:" (routes the call to the tenant's slot)
-- ARGV[1]  mode: "decide" | "release" | "adopt" | "stats" | "active"
--
-- decide  ARGV[2] idempotency TTL (s), ARGV[3] active-slot TTL (ms), ARGV[4] the batch, one flat
--         msgpack array built by encode_batch in balancer.py:
--           {k, seed, target_1, ..., target_k, session, stage, target, failed, caller, from, fstatus,
--            session, ...}
--         seed: seeds math.random (once per script call, when a weighted / least_active choice draws)
--         or 0 (no target of the batch draws)
--         target = {strategy, group, window_hours, max_attempts, fallback, n,
--                   agent, priority, capacity (n times, agent a string), head, tail (n times),
--                   no_agent, opts}
--         opts (always the target's LAST element, read as e[#e]): a map, keys only when they apply:
--           sticky_s  caller stickiness (s): the agent a caller last reached in this group, kept in
--                     `st:<group>:<from>` for that long, is chosen again when it can take the call
--           w         weighted: the members' weights, in order
--           unl       every member's capacity is unlimited (the trace of a first choice is '*')
--           hp        what every member's head starts with (sent once; the heads carry the rest)
--           rotate    false: the priority strategy keeps equal priorities in id order (default: it
--                     rotates among them, the last chosen per level in the hash `pr:<group>`)
--           ovf       settings.overflow, flattened: per step another group's target (inline, chosen
--                     by its own strategy with the call's tried-set) or an answer string,
--                     'N<cxml>' (a number, dialled once per call: mark 's<k>' in `tried`) or 'A<cxml>'
--                     (an announcement); walked when the target itself finds nobody
--           ol_*, ol_cfg  settings.outlier (ol_cfg: the same as one string, kept in the call's hash
--                     for release)
--         per request: `target` its 1-based index, `failed` the failed dial's agent ('' for none),
--         `caller` what goes between a chosen head and tail (a tail '' means head alone), `from`
--         the caller's normalised number ('' unless the target is sticky), `fstatus` the failed
--         dial's reason when it counts against the agent ('busy' | 'failed' | 'no_answer'; ''
--         otherwise).
--         Decides each in turn and returns a flat array of
--         index, agent (0 = none), attempt, cxml, replay (0/1), outlier note ('' for none), overflow
--         step (0 = none), trace per request. The trace explains the choice (no extra Redis work:
--         what the choice looked at anyway): one character per candidate of the target, in order,
--         'c' chosen, '.' free (another was chosen), 't' tried by the call, 'e' ejected, 'f' full, '-'
--         not looked at (round_robin: every candidate outside the walk from the rotation's place to
--         the one chosen); then per overflow step walked '/' and its group's characters, or 'c' (the
--         number / announcement answered) or 't' (the number was dialled before). '!E' (the call is
--         over), '!M' (max_attempts reached) or '!F' (no fallback) when nothing was looked at; ''
--         for a replay. The decision of a
--         (session, stage) is kept in the call's hash (field d:<stage>) for as long as the hash
--         lives (at least the idempotency TTL): a repeat returns it and moves nothing.
--         ARGV[5] how long a new window bucket lives (s): the longest window and a margin.
-- release ARGV[2] session, ARGV[3] '1' when the call itself is over (session update, CDR): then
--         no later decide takes a slot for it; ARGV[4] (with '1') how long (s) to keep that mark
--         for a call Redis never routed (decided in degraded mode by some replica that has not
--         reconciled yet) -> 1 when the call's slot was freed, else 0.
--         ARGV[5] (optional, then ARGV[3] is '1' or '0') the outlier outcome to judge for the call's
--         group when it has settings.outlier: 'f:<reason>:<agent>' a failed dial (agent '' = the
--         call's last), 'a:<talk ms>' the call ended answered (-1 = unknown) -> {freed, note}.
-- adopt   ARGV[2] idempotency TTL (s), ARGV[3] active-slot TTL (ms), ARGV[4] window bucket TTL (s),
--         ARGV[5] a flat msgpack array {session, agent, slot_ms, tried, ended, session, ...}: what
--         one engine decided and freed while Redis was unreachable (its local view), merged in:
--         agent ('' = the call holds no slot now) takes a slot living slot_ms more, replacing the
--         one Redis knew; tried (',1,5,') joins the call's; ended = 1 marks the call over (no slot).
--         Idempotent: a repeat moves nothing; an agent new to the call's `tried` is counted in the
--         current window bucket once. -> {slots taken, slots freed, calls ended}
-- stats   ARGV[2] window_hours, ARGV[3..] agent ids -> flat window, active, last (ms, 0 = never).
-- active  ARGV[2..] agent ids -> live slot count per agent.
--
-- Window counters are hashes per tenant with a field per agent: `win:<minute>` and `winh:<hour>`
-- (calls routed per epoch minute and hour), `wb:<window_hours>` (the window's completed minutes,
-- summed once a minute, as "<minute>:<sum>") and `last` (when each agent was last chosen, epoch ms).
-- Buckets live as long as the longest window (decide's ARGV[5]), whichever group counted in them.
--
-- Outlier ejection (groups with settings.outlier): `olx:<group>` hash, field = agent, value
-- "<until ms>|<ejections in a row>|<reason>|<at ms>|<session>": the agent is out of the group's
-- selection until then, and on probation after (a failure re-ejects with the next back-off, a success
-- removes the field). `ol:<group>` hash: `s:<agent>` consecutive failures, `w:<agent>`
-- "<window start ms>:<failures>:<calls>" (a tumbling window of window_s, only with failure_rate).
-- Per call (its hash): `olg` group, `ola` the agent last chosen, `olo` the group's ol_cfg, `olf`
-- agents whose failure was counted (',a,b,'), `olj` the call's end was judged.

local base = KEYS[1]
local mode = ARGV[1]
local floor = math.floor
local tonumber = tonumber
local tostring = tostring
local call = redis.call

local t = call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + floor(tonumber(t[2]) / 1000)
local now_min = floor(now_s / 60)
local now_hour = floor(now_min / 60)
local now_min_s = string.format('%d', now_min)
local now_hour_s = string.format('%d', now_hour)
-- ZCOUNT lower bound: a slot whose expiry score is <= now is over.
local live_from = '(' .. string.format('%d', now_ms)

local function active_count(agent)
  return call('ZCOUNT', base .. 'active:' .. agent, live_from, '+inf')
end

-- Calls routed to each of `agents` in the inclusive minute range [a, b], into `into[agent]`: whole
-- hours from the hour buckets, partial hours at the edges from the minute buckets (one HMGET of all
-- the agents per bucket, at most 60 minute buckets in all).
local function range_sums(agents, a, b, into)
  for i = 1, #agents do into[agents[i]] = 0 end
  if a > b then return end
  local mk = base .. 'win:'
  local hk = base .. 'winh:'
  local keys = {}
  local n = 0
  local ha = floor(a / 60)
  local hb = floor(b / 60)
  if ha == hb and not (a % 60 == 0 and b % 60 == 59) then
    for m = a, b do n = n + 1; keys[n] = mk .. m end
  else
    local first_full, last_full = ha, hb
    if a % 60 ~= 0 then
      for m = a, ha * 60 + 59 do n = n + 1; keys[n] = mk .. m end
      first_full = ha + 1
    end
    if b % 60 ~= 59 then
      for m = hb * 60, b do n = n + 1; keys[n] = mk .. m end
      last_full = hb - 1
    end
    for h = first_full, last_full do n = n + 1; keys[n] = hk .. h end
  end
  for k = 1, n do
    local vals = call('HMGET', keys[k], unpack(agents))
    for i = 1, #agents do
      local v = vals[i]
      if v then into[agents[i]] = into[agents[i]] + tonumber(v) end
    end
  end
end

-- Calls routed to an agent in the last `wh` hours = the window's completed minutes, summed from the
-- buckets once a minute and kept in `wb:<wh>` (field = agent, "<minute>:<sum>", a 2-minute key), plus
-- the current minute's bucket, read live. Nothing is written per choice but the buckets themselves.

-- The window calls of each of `agents` for `wh`, into `into[agent]`: one HMGET of the cached sums
-- and one of the current minute's bucket for all of them.
local function load_windows(agents, wh, into)
  local wbk = base .. 'wb:' .. wh
  local stamp = now_min_s .. ':'
  local stamp_len = #stamp
  local cached = call('HMGET', wbk, unpack(agents))
  local live = call('HMGET', base .. 'win:' .. now_min_s, unpack(agents))
  local missing = {}
  for i = 1, #agents do
    local c = cached[i]
    if c and string.sub(c, 1, stamp_len) == stamp then
      into[agents[i]] = tonumber(string.sub(c, stamp_len + 1)) + tonumber(live[i] or '0')
    else
      missing[#missing + 1] = i
    end
  end
  if #missing > 0 then
    local names, sums, fields = {}, {}, {}
    for k = 1, #missing do names[k] = agents[missing[k]] end
    range_sums(names, now_min - wh * 60 + 1, now_min - 1, sums)
    for k = 1, #missing do
      local i = missing[k]
      local agent = agents[i]
      fields[2 * k - 1] = agent
      fields[2 * k] = stamp .. sums[agent]
      into[agent] = sums[agent] + tonumber(live[i] or '0')
    end
    call('HSET', wbk, unpack(fields))
    call('EXPIRE', wbk, 120)
  end
end

-- Count a call of `agent` in a bucket; a new bucket lives `ttl` seconds. Every bucket lives as long
-- as the longest window, so a bucket a short-window group counted in still counts for a long-window
-- group sharing the agent.
local function bump(key, agent, ttl)
  if call('HINCRBY', key, agent, 1) == 1 then call('EXPIRE', key, ttl) end
end

-- Outlier ejection (see the header). Its functions are made by the first call of outlier_fns(), which
-- only a group with settings.outlier makes: a script call for other groups creates none of them.
local OL_TTL = 7 * 86400
local ej_cache, ej_of, parse_cfg, ol_fail, ol_success
local function outlier_fns()
  if ej_of then return end
  ej_cache = {}
  function ej_of(group)
    local m = ej_cache[group]
    if m == nil then
      m = {}
      local flat = call('HGETALL', base .. 'olx:' .. group)
      for i = 1, #flat, 2 do m[flat[i]] = tonumber(string.match(flat[i + 1], '^(%d+)')) end
      ej_cache[group] = m
    end
    return m
  end

  -- ol_cfg "n|rate|window_s|min_calls|base_s|max_s|pct|short_s|allow_all|members" as a table.
  function parse_cfg(s)
    local v = {}
    for x in string.gmatch(s, '[^|]+') do v[#v + 1] = tonumber(x) end
    return {n = v[1], rate = v[2], win = v[3], min = v[4], base = v[5], max = v[6], pct = v[7],
      short = v[8], all = v[9], members = v[10]}
  end

  -- Count one judged call of `agent` in its failure-rate window -> failures, calls in the window.
  local function ol_window(sk, agent, c, failed)
    if c.rate <= 0 then return 0, 0 end
    local f = 'w:' .. agent
    local w = call('HGET', sk, f)
    local start, fails, total = now_ms, 0, 0
    if w then
      local a, b, d = string.match(w, '^(%d+):(%d+):(%d+)$')
      a = tonumber(a)
      if a and now_ms - a < c.win * 1000 then start, fails, total = a, tonumber(b), tonumber(d) end
    end
    total = total + 1
    if failed then fails = fails + 1 end
    call('HSET', sk, f, string.format('%d:%d:%d', start, fails, total))
    return fails, total
  end

  -- A failure (`kind`: busy | failed | no_answer | short_call) of `agent` in `group` during `session`:
  -- counts it, and ejects the agent when its streak, its failure rate or its probation says so and the
  -- guards allow -> the note 'e|group|agent|until|k|reason|backoff_s', or ''.
  function ol_fail(group, c, agent, kind, session, ej)
    local sk = base .. 'ol:' .. group
    local xk = base .. 'olx:' .. group
    local streak = call('HINCRBY', sk, 's:' .. agent, 1)
    local fails, total = ol_window(sk, agent, c, true)
    call('EXPIRE', sk, OL_TTL)
    local rec = call('HGET', xk, agent)
    local k = 0
    local trigger
    if rec then
      local u, kk = string.match(rec, '^(%d+)|(%d+)|')
      if tonumber(u) > now_ms then return '' end -- already out (dialled before it was ejected)
      k = tonumber(kk)
      trigger = 'probation'
    elseif streak >= c.n then
      trigger = 'consecutive'
    elseif c.rate > 0 and total >= c.min and fails > c.rate * total then
      trigger = 'failure_rate'
    else
      return ''
    end
    -- never more than pct % of the group out, never its last agent unless allowed
    local out_now = 0
    for a, u in pairs(ej) do
      if u > now_ms and a ~= agent then out_now = out_now + 1 end
    end
    if (c.all ~= 1 and out_now + 1 >= c.members) or (out_now + 1) * 100 > c.pct * c.members then
      return ''
    end
    k = k + 1
    local backoff = c.max
    if k <= 30 then backoff = math.min(c.base * 2 ^ (k - 1), c.max) end
    local until_ms = now_ms + backoff * 1000
    local reason = trigger .. ':' .. kind
    call('HSET', xk, agent, string.format('%d|%d|%s|%d|%s', until_ms, k, reason, now_ms, session))
    call('EXPIRE', xk, OL_TTL)
    call('HDEL', sk, 's:' .. agent, 'w:' .. agent)
    ej[agent] = until_ms
    return string.format('e|%s|%s|%d|%d|%s|%d', group, agent, until_ms, k, reason, backoff)
  end

  -- A success of `agent` in `group`: resets its streak; ends its probation -> note 'r|...' or ''.
  function ol_success(group, c, agent)
    local sk = base .. 'ol:' .. group
    call('HDEL', sk, 's:' .. agent)
    if c.rate > 0 then
      ol_window(sk, agent, c, false)
      call('EXPIRE', sk, OL_TTL)
    end
    local xk = base .. 'olx:' .. group
    local rec = call('HGET', xk, agent)
    if rec then
      local u, kk = string.match(rec, '^(%d+)|(%d+)|')
      if tonumber(u) <= now_ms then
        call('HDEL', xk, agent)
        return string.format('r|%s|%s|0|%s|probation_passed|0', group, agent, kk)
      end
    end
    return ''
  end
end

if mode == 'release' then
  local session = ARGV[2]
  local ck = base .. 'call:' .. session
  local outcome = ARGV[5]
  local cur, olg, ola, olo, olj, olf, tried
  if outcome then
    local st = call('HMGET', ck, 'cur', 'olg', 'ola', 'olo', 'olj', 'olf', 'tried')
    cur, olg, ola, olo, olj, olf, tried = st[1], st[2], st[3], st[4], st[5], st[6], st[7]
  else
    cur = call('HGET', ck, 'cur')
  end
  -- A dial-status delivered after the call's end (out of order) must not take a slot that nothing
  -- would free before the safety TTL. Only a call routed here has a hash (and its TTL) to mark.
  if ARGV[3] == '1' then
    if cur then
      call('HSET', ck, 'end', '1')
    elseif ARGV[4] then
      -- never routed here: a replica may still adopt its degraded decision; this tells it the call is over
      call('HSET', ck, 'end', '1', 'cur', '')
      call('EXPIRE', ck, tonumber(ARGV[4]))
    end
  end
  local note = ''
  if olg and olo then
    outlier_fns()
    local c = parse_cfg(olo)
    local kind, rest = string.match(outcome, '^(%a):(.*)$')
    olf = olf or ','
    if kind == 'f' then
      local reason, agent = string.match(rest, '^([%w_]+):(%d*)$')
      if agent == '' then agent = ola end
      if reason and agent and agent ~= '' and string.find(tried or ',', ',' .. agent .. ',', 1, true)
        and not string.find(olf, ',' .. agent .. ',', 1, true) then
        call('HSET', ck, 'olf', olf .. agent .. ',')
        note = ol_fail(olg, c, agent, reason, session, ej_of(olg))
      end
    elseif kind == 'a' and ARGV[3] == '1' and not olj and ola and ola ~= ''
      and not string.find(olf, ',' .. ola .. ',', 1, true) then
      -- the call ended answered by its last agent (whose dial did not fail): judge it once
      local talk = tonumber(rest) or -1
      if c.short <= 0 or talk >= 0 then
        call('HSET', ck, 'olj', '1')
        if c.short > 0 and talk < c.short * 1000 then
          note = ol_fail(olg, c, ola, 'short_call', session, ej_of(olg))
        else
          note = ol_success(olg, c, ola)
        end
      end
    end
  end
  local freed = 0
  if cur and cur ~= '' then
    call('HSET', ck, 'cur', '')
    freed = call('ZREM', base .. 'active:' .. cur, session)
  end
  if outcome then return {freed, note} end
  return freed
end

if mode == 'stats' then
  local wh = tonumber(ARGV[2])
  local agents = {}
  for i = 3, #ARGV do agents[#agents + 1] = ARGV[i] end
  local windows = {}
  load_windows(agents, wh, windows)
  local last = call('HMGET', base .. 'last', unpack(agents))
  local out = {}
  for i = 1, #agents do
    out[#out + 1] = windows[agents[i]]
    out[#out + 1] = active_count(agents[i])
    out[#out + 1] = tonumber(last[i] or '0')
  end
  return out
end

if mode == 'active' then
  local out = {}
  for i = 2, #ARGV do out[#out + 1] = active_count(ARGV[i]) end
  return out
end

if mode == 'adopt' then
  local idem_ttl = tonumber(ARGV[2])
  local slot_ttl_ms = tonumber(ARGV[3])
  local bucket_ttl = tonumber(ARGV[4])
  local call_ttl = idem_ttl
  if floor(slot_ttl_ms / 1000) + 60 > call_ttl then call_ttl = floor(slot_ttl_ms / 1000) + 60 end
  local rows = cmsgpack.unpack(ARGV[5])
  local taken, freed, ended_n = 0, 0, 0
  local now_ms_s = string.format('%d', now_ms)
  for p = 1, #rows, 5 do
    local session, agent, slot_ms, tried, ended = rows[p], rows[p + 1], rows[p + 2], rows[p + 3], rows[p + 4]
    local ck = base .. 'call:' .. session
    local state = call('HMGET', ck, 'cur', 'tried', 'end')
    local cur, known, over = state[1] or '', state[2] or ',', state[3]
    -- the call's tried agents: Redis's, then the local view's new ones (counted in the window once)
    local merged = known
    for a in string.gmatch(tried, '[^,]+') do
      if not string.find(merged, ',' .. a .. ',', 1, true) then
        -- chosen for this call in degraded mode: count it as decide would have
        merged = merged .. a .. ','
        bump(base .. 'win:' .. now_min_s, a, bucket_ttl)
        bump(base .. 'winh:' .. now_hour_s, a, bucket_ttl + 3600)
        call('HSET', base .. 'last', a, now_ms_s)
        call('EXPIRE', base .. 'last', 8 * 86400)
      end
    end
    if over or ended == 1 or agent == '' or slot_ms <= 0 then
      -- the call holds no slot: free the one Redis knew (and one an earlier adopt may have taken)
      if cur ~= '' and call('ZREM', base .. 'active:' .. cur, session) == 1 then freed = freed + 1 end
      if agent ~= '' and agent ~= cur and call('ZREM', base .. 'active:' .. agent, session) == 1 then
        freed = freed + 1
      end
      if over or ended == 1 then
        if not over then ended_n = ended_n + 1 end
        call('HSET', ck, 'cur', '', 'tried', merged, 'end', '1')
      else
        call('HSET', ck, 'cur', '', 'tried', merged)
      end
    else
      if cur ~= agent then
        if cur ~= '' and call('ZREM', base .. 'active:' .. cur, session) == 1 then freed = freed + 1 end
        taken = taken + 1
      end
      local ak = base .. 'active:' .. agent
      call('ZADD', ak, string.format('%d', now_ms + slot_ms), session)
      call('PEXPIRE', ak, slot_ttl_ms)
      call('HSET', ck, 'cur', agent, 'tried', merged)
    end
    call('EXPIRE', ck, call_ttl)
  end
  return {taken, freed, ended_n}
end

if mode ~= 'decide' then return redis.error_reply('unknown mode ' .. tostring(mode)) end

local idem_ttl = tonumber(ARGV[2])
local slot_ttl_ms = tonumber(ARGV[3])
local bucket_ttl = tonumber(ARGV[5])
local expiry = string.format('%d', now_ms + slot_ttl_ms)
local call_ttl = idem_ttl
if floor(slot_ttl_ms / 1000) + 60 > call_ttl then call_ttl = floor(slot_ttl_ms / 1000) + 60 end
local LAST_TTL = 8 * 86400
local now_ms_s = string.format('%d', now_ms)
local find = string.find
local batch = cmsgpack.unpack(ARGV[4])

-- Per-script caches: a batch reads each agent's counters once and keeps them current as it decides.
-- Agents are strings here (as in the keys): no number is formatted per choice.
local active_cache = {}
local window_cache = {}

local function active_of(agent)
  local v = active_cache[agent]
  if v == nil then
    v = active_count(agent)
    active_cache[agent] = v
  end
  return v
end

-- window_cache[wh][agent]: the window calls of `agent` for `wh` as of this point of the batch.
local function windows_for(wh)
  local per = window_cache[wh]
  if per == nil then
    per = {}
    window_cache[wh] = per
  end
  return per
end

-- The ejections of the group being decided (ej_of), nil when it has no settings.outlier.
local cur_ej = nil

-- Candidate i (1-based) of target e: agent at e[3 + 4i], priority, capacity, weight after it.
local function available(agent, cap, tried)
  if tried ~= ',' and find(tried, ',' .. agent .. ',', 1, true) then return false end
  if cur_ej then
    local u = cur_ej[agent]
    if u and u > now_ms then return false end
  end
  return cap == 0 or active_of(agent) < cap
end



local function pick_load_balanced(e, n, tried, wh)
  -- Relative to capacity only when capacities differ; an unlimited member (0) counts as large as
  -- the largest finite capacity among the candidates.
  local differ = false
  local maxcap = 0
  local cap1 = e[9]
  for i = 1, n do
    local cap = e[6 + 3 * i]
    if cap > maxcap then maxcap = cap end
    if cap ~= cap1 then differ = true end
  end
  if maxcap == 0 then maxcap = 1 end
  local windows = windows_for(wh)
  local eligible, missing = {}, {}
  for i = 1, n do
    local o = 4 + 3 * i
    local agent = e[o]
    if available(agent, e[o + 2], tried) then
      eligible[#eligible + 1] = i
      if windows[agent] == nil then missing[#missing + 1] = agent end
    end
  end
  if #missing > 0 then load_windows(missing, wh, windows) end
  local best, best_calls, best_cap = -1, 0, 1
  for k = 1, #eligible do
    local i = eligible[k]
    local o = 4 + 3 * i
    local calls = windows[e[o]]
    local cap = 1
    if differ then
      cap = e[o + 2]
      if cap == 0 then cap = maxcap end
    end
    -- calls/cap < best_calls/best_cap, compared exactly; earlier (priority, id) wins ties
    if best == -1 or calls * best_cap < best_calls * cap then
      best, best_calls, best_cap = i, calls, cap
    end
  end
  return best
end

-- Free `session`'s slot of `agent` (a string); keeps the batch's cached count in step.
local function free_slot(agent, session)
  if call('ZREM', base .. 'active:' .. agent, session) == 1 then
    local cached = active_cache[agent]
    if cached ~= nil then active_cache[agent] = cached - 1 end
  end
end


-- The strategies other than load_balanced (and stickiness), choose_in and the trace's codes_of: made
-- by the first call of more_pickers(), so a script call that only makes first choices in unlimited
-- load_balanced groups creates none of them.
local pick_priority, pick_sticky, seed, pick_weighted, pick_least_active, pick_round_robin
local codes_of, choose_in
local scratch = nil
-- Where the last round_robin choice started its walk (an index), for codes_of: the candidates it did
-- not walk past are '-' (not looked at), so a trace shows the rotation exactly. nil otherwise.
local rr_from = nil
local seeded = false
local function more_pickers()
  if pick_priority then return end
  -- The lowest priority with a free member; among several members of that priority, the next (by id)
  -- after the one last chosen at that level (hash `pr:<group>`, field = priority), unless `rotate` is
  -- false. A level of one member reads and writes nothing. -> index, and whether the level rotates
  -- (then the caller records the choice).
  function pick_priority(e, n, tried, rotate, prkey)
    for i = 1, n do
      local o = 4 + 3 * i
      if available(e[o], e[o + 2], tried) then
        local p = e[o + 1]
        if not rotate then return i, false end
        -- the level's members: e is in (priority, id) order, so they surround i
        local first, last = i, i
        while first > 1 and e[4 + 3 * (first - 1) + 1] == p do first = first - 1 end
        while last < n and e[4 + 3 * (last + 1) + 1] == p do last = last + 1 end
        if first == last then return i, false end
        local prev = call('HGET', prkey, p)
        if not prev then return i, true end
        prev = tonumber(prev)
        local start = first
        for j = first, last do
          if tonumber(e[4 + 3 * j]) > prev then start = j; break end
        end
        local size = last - first + 1
        for k = 0, size - 1 do
          local j = first + (start - first + k) % size
          local oj = 4 + 3 * j
          if j == i or available(e[oj], e[oj + 2], tried) then return j, true end
        end
        return i, true
      end
    end
    return -1, false
  end

  -- Stickiness: the agent `skey` names (the one this caller last reached in the group), when it is
  -- still a member and can take the call; else -1.
  function pick_sticky(e, n, tried, skey)
    local agent = call('GET', skey)
    if not agent then return -1 end
    for i = 1, n do
      local o = 4 + 3 * i
      if e[o] == agent then
        if available(agent, e[o + 2], tried) then return i end
        return -1
      end
    end
    return -1
  end

  function seed()
    if not seeded then
      seeded = true
      if batch[2] ~= 0 then math.randomseed(batch[2]) end
    end
  end

  -- Random among the free members in proportion to their weight.
  function pick_weighted(e, n, tried, opts)
    local eligible, total = {}, 0
    for i = 1, n do
      local o = 4 + 3 * i
      if available(e[o], e[o + 2], tried) then
        eligible[#eligible + 1] = i
        total = total + opts.w[i]
      end
    end
    if #eligible == 0 then return -1 end
    if #eligible == 1 or total < 1 then return eligible[1] end
    seed()
    local x = math.random(total)
    for k = 1, #eligible do
      local i = eligible[k]
      x = x - opts.w[i]
      if x <= 0 then return i end
    end
    return eligible[#eligible]
  end

  -- The fewest active calls relative to capacity (an unlimited member counts as large as the largest
  -- finite capacity; relative only when capacities differ); among equals, two random choices: the one
  -- with more free slots, else the first drawn.
  function pick_least_active(e, n, tried, opts)
    local differ = false
    local maxcap = 0
    local cap1 = e[9]
    for i = 1, n do
      local cap = e[6 + 3 * i]
      if cap > maxcap then maxcap = cap end
      if cap ~= cap1 then differ = true end
    end
    if maxcap == 0 then maxcap = 1 end
    local ties, best_act, best_cap = {}, 0, 1
    for i = 1, n do
      local o = 4 + 3 * i
      local agent = e[o]
      if available(agent, e[o + 2], tried) then
        local act = active_of(agent)
        local cap = 1
        if differ then
          cap = e[o + 2]
          if cap == 0 then cap = maxcap end
        end
        if #ties == 0 or act * best_cap < best_act * cap then
          ties = {i}
          best_act, best_cap = act, cap
        elseif act * best_cap == best_act * cap then
          ties[#ties + 1] = i
        end
      end
    end
    local m = #ties
    if m == 0 then return -1 end
    if m == 1 then return ties[1] end
    seed()
    local a = math.random(m)
    local b = math.random(m - 1)
    if b >= a then b = b + 1 end
    local ia, ib = ties[a], ties[b]
    local function room(i)
      local cap = e[6 + 3 * i]
      if cap == 0 then return math.huge end
      return cap - active_of(e[4 + 3 * i])
    end
    if room(ib) > room(ia) then return ib end
    return ia
  end

  function pick_round_robin(e, n, tried, rrkey)
    local start = 1
    local last = call('GET', rrkey)
    if last then
      local lp, la = string.match(last, '^(%-?%d+):(%d+)$')
      lp = tonumber(lp)
      la = tonumber(la)
      if lp then
        -- the first member after (lp, la) in (priority, id) order; wraps to the first
        start = n + 1
        for i = 1, n do
          local o = 4 + 3 * i
          local p = e[o + 1]
          if p > lp or (p == lp and tonumber(e[o]) > la) then
            start = i
            break
          end
        end
        if start > n then start = 1 end
      end
    end
    rr_from = start
    for k = 0, n - 1 do
      local i = (start - 1 + k) % n + 1
      local o = 4 + 3 * i
      if available(e[o], e[o + 2], tried) then return i end
    end
    return -1
  end

  -- The trace of target e (n candidates) right after a choice in it (idx, -1 = none), from what the
  -- choice left known (no Redis call): per candidate 'c' chosen, 't' tried by the call, 'e' ejected,
  -- 'f' full, '.' free, '-' unknown (a capacity the choice did not need to count). After a
  -- round_robin choice, '-' also for every candidate outside its walk (from where the rotation stood
  -- to the one chosen, or all of them when none was), whatever else is known of it.
  function codes_of(e, n, idx, tried)
    local t = scratch
    if t == nil then t = {}; scratch = t end
    local from, reach = rr_from, n
    rr_from = nil
    if from and idx > 0 then reach = (idx - from) % n end
    for i = 1, n do
      local o = 4 + 3 * i
      local agent = e[o]
      local code
      if i == idx then
        code = 'c'
      elseif from and (i - from) % n > reach then
        code = '-'
      elseif tried ~= ',' and find(tried, ',' .. agent .. ',', 1, true) then
        code = 't'
      else
        local u = cur_ej and cur_ej[agent]
        if u and u > now_ms then
          code = 'e'
        else
          local cap = e[o + 2]
          if cap == 0 then
            code = '.'
          else
            local act = active_cache[agent]
            if act == nil then code = '-' elseif act < cap then code = '.' else code = 'f' end
          end
        end
      end
      t[i] = code
    end
    return table.concat(t, '', 1, n)
  end

  -- A choice in target e (n candidates) by its stickiness and strategy -> index (-1 = none), the
  -- stickiness key (nil unless sticky), whether the strategy chose, whether a priority level rotated.
  function choose_in(e, n, tried, from, opts)
    local strategy, group = e[1], e[2]
    local idx, skey, level = -1, nil, false
    if strategy == 'load_balanced' and not opts.sticky_s then
      return pick_load_balanced(e, n, tried, e[3]), nil, true, false
    end
    if opts.sticky_s and from ~= '' then
      skey = base .. 'st:' .. group .. ':' .. from
      idx = pick_sticky(e, n, tried, skey)
      if idx > 0 then return idx, skey, false, false end
    end
    if strategy == 'load_balanced' then
      idx = pick_load_balanced(e, n, tried, e[3])
    elseif strategy == 'round_robin' then
      idx = pick_round_robin(e, n, tried, base .. 'rr:' .. group)
    elseif strategy == 'weighted' then
      idx = pick_weighted(e, n, tried, opts)
    elseif strategy == 'least_active' then
      idx = pick_least_active(e, n, tried, opts)
    elseif strategy == 'priority' then
      idx, level = pick_priority(e, n, tried, opts.rotate ~= false, base .. 'pr:' .. group)
    else -- single (one candidate)
      idx = pick_priority(e, n, tried, false, nil)
    end
    return idx, skey, true, level
  end
end

local out = {}
local pos = batch[1] + 3
local r = 0
while batch[pos] do
  local session, stage, failed, caller = batch[pos], batch[pos + 1], batch[pos + 3], batch[pos + 4]
  local from, fstatus = batch[pos + 5], batch[pos + 6]
  local e = batch[2 + batch[pos + 2]]
  pos = pos + 7
  r = r + 1
  local strategy, group, wh, max_attempts, fallback, n = e[1], e[2], e[3], e[4], e[5], e[6]
  local ck = base .. 'call:' .. session
  local dfield = 'd:' .. stage
  local state = call('HMGET', ck, 'cur', 'tried', 'end', dfield)
  local stored = state[4]
  if stored then
    local si, sa, st, rest = string.match(stored, '^(%-?%d+)|(%d+)|(%d+)|()')
    local ostep, orest = string.match(stored, '^o(%d+)|()', rest)
    if ostep then rest = orest end
    out[#out + 1] = tonumber(si)
    out[#out + 1] = tonumber(sa)
    out[#out + 1] = tonumber(st)
    out[#out + 1] = string.sub(stored, rest)
    out[#out + 1] = 1
    out[#out + 1] = ''
    out[#out + 1] = tonumber(ostep or '0')
    out[#out + 1] = ''
  else
    local attempt = 1
    local is_dial = stage ~= 'app'
    if is_dial then attempt = tonumber(string.match(stage, '^dial%-(%d+)$')) + 1 end
    local cur, tried, ended = state[1] or '', state[2] or ',', state[3]
    local opts = e[#e]
    local olc = nil -- the group's outlier settings, when it has them
    local note = ''
    cur_ej = nil
    if opts.ol_cfg then
      outlier_fns()
      olc = opts.olc
      if olc == nil then
        olc = parse_cfg(opts.ol_cfg)
        opts.olc = olc
      end
      cur_ej = ej_of(group)
      local member = false
      if fstatus ~= '' and failed ~= '' then
        -- only the group's own members (an overflow group's agent is not judged here)
        for i = 1, n do
          if e[4 + 3 * i] == failed then member = true; break end
        end
      end
      if member and find(tried, ',' .. failed .. ',', 1, true) then
        local olf = call('HGET', ck, 'olf') or ','
        if not find(olf, ',' .. failed .. ',', 1, true) then
          call('HSET', ck, 'olf', olf .. failed .. ',')
          note = ol_fail(group, olc, failed, fstatus, session, cur_ej)
        end
      end
    end
    if failed ~= '' and cur == failed then
      -- free the failed dial's slot exactly once: `cur` is cleared with it
      free_slot(cur, session)
      cur = ''
    end
    local idx, skey, by_strategy, level = -1, nil, true, false
    local ol_cfg, group_sel = nil, group
    local sel, step, step_cxml = e, 0, nil
    local trace
    if ended then
      trace = '!E'
    elseif attempt > max_attempts then
      trace = '!M'
    elseif is_dial and not fallback then
      trace = '!F'
    else
      trace = ''
      if n > 0 then
        if strategy == 'load_balanced' and not opts.sticky_s then
          idx = pick_load_balanced(e, n, tried, wh)
        else
          more_pickers()
          idx, skey, by_strategy, level = choose_in(e, n, tried, from, opts)
        end
        if tried == ',' and not cur_ej and opts.unl and idx > 0 then
          rr_from = nil
          trace = '*' -- every member unlimited, none tried or ejected: all free, one chosen
        else
          more_pickers()
          trace = codes_of(e, n, idx, tried)
        end
      end
      local ovf = opts.ovf
      if idx < 0 and ovf then
        -- settings.overflow: the steps after the group, in order, with the call's tried-set
        more_pickers()
        for k = 1, #ovf do
          local s = ovf[k]
          if type(s) == 'table' then
            local e2 = s
            local o2 = e2[#e2]
            cur_ej = nil
            if o2.ol_cfg then outlier_fns(); cur_ej = ej_of(e2[2]) end
            if e2[6] > 0 then
              idx, skey, by_strategy, level = choose_in(e2, e2[6], tried, from, o2)
              trace = trace .. '/' .. codes_of(e2, e2[6], idx, tried)
              if idx > 0 then sel, step = e2, k; break end
            else
              trace = trace .. '/'
            end
          else
            local mark = 's' .. k
            local kind = string.sub(s, 1, 1)
            if kind == 'A' then
              step, step_cxml = k, string.sub(s, 2)
              trace = trace .. '/c'
              break
            elseif not find(tried, ',' .. mark .. ',', 1, true) then
              -- a number: dialled once per call (its mark joins the tried-set)
              step, step_cxml = k, string.sub(s, 2)
              tried = tried .. mark .. ','
              trace = trace .. '/c'
              break
            end
            trace = trace .. '/t'
          end
        end
      end
    end
    local agent = '0'
    local cxml
    if idx > 0 then
      local so = sel[#sel]
      local e, n, group, strategy, sticky_s = sel, sel[6], sel[2], sel[1], so.sticky_s
      local o = 4 + 3 * idx
      agent = e[o]
      local ak = base .. 'active:' .. agent
      -- Slots past their expiry are not counted (ZCOUNT from now); removing them is housekeeping,
      -- done on about one choice in eight.
      if (now_ms + r) % 8 == 0 then call('ZREMRANGEBYSCORE', ak, '-inf', now_ms_s) end
      call('ZADD', ak, expiry, session)
      call('PEXPIRE', ak, slot_ttl_ms)
      if active_cache[agent] ~= nil then active_cache[agent] = active_cache[agent] + 1 end
      bump(base .. 'win:' .. now_min_s, agent, bucket_ttl)
      bump(base .. 'winh:' .. now_hour_s, agent, bucket_ttl + 3600)
      for _, per in pairs(window_cache) do
        if per[agent] ~= nil then per[agent] = per[agent] + 1 end
      end
      call('HSET', base .. 'last', agent, now_ms_s)
      call('EXPIRE', base .. 'last', LAST_TTL)
      if by_strategy then
        if strategy == 'round_robin' then
          call('SET', base .. 'rr:' .. group, e[o + 1] .. ':' .. agent)
        elseif level then
          call('HSET', base .. 'pr:' .. group, e[o + 1], agent)
        end
      end
      if skey then call('SET', skey, agent, 'EX', sticky_s) end
      -- A call holds one slot at most: a dial-status that did not name the failed agent (no or a
      -- stale `agent` in its URL) still ends the dial that held `cur`, so free it before moving on.
      if cur ~= '' and cur ~= agent then free_slot(cur, session) end
      cur = agent
      tried = tried .. agent .. ','
      local a = 5 + 3 * n + 2 * idx
      local head, tail = e[a], e[a + 1]
      local hp = so.hp
      if hp then
        if tail == '' then cxml = hp .. head else cxml = hp .. head .. caller .. tail end
      elseif tail == '' then
        cxml = head
      else
        cxml = head .. caller .. tail
      end
      ol_cfg, group_sel = so.ol_cfg, group
    elseif step_cxml then
      -- a number or an announcement: the call holds no agent slot from here on
      if cur ~= '' then free_slot(cur, session); cur = '' end
      cxml = step_cxml
    else
      cxml = e[7 + 5 * n]
    end
    local zidx = idx - 1
    if idx < 0 then zidx = -1 end
    local dval
    if step > 0 then
      dval = zidx .. '|' .. agent .. '|' .. attempt .. '|o' .. step .. '|' .. cxml
    else
      dval = zidx .. '|' .. agent .. '|' .. attempt .. '|' .. cxml
    end
    -- The decision stays in the call's hash (field d:<stage>) for replays, as long as the hash.
    if ol_cfg and idx > 0 then
      -- what a release needs to judge this call's end for the group's outlier settings
      call('HSET', ck, 'cur', cur, 'tried', tried, 'att', attempt, dfield, dval,
        'olg', group_sel, 'ola', agent, 'olo', ol_cfg)
    else
      call('HSET', ck, 'cur', cur, 'tried', tried, 'att', attempt, dfield, dval)
    end
    call('EXPIRE', ck, call_ttl)
    out[#out + 1] = zidx
    out[#out + 1] = agent
    out[#out + 1] = attempt
    out[#out + 1] = cxml
    out[#out + 1] = 0
    out[#out + 1] = note
    out[#out + 1] = step
    out[#out + 1] = trace
  end
end
return out

//! The Lua scripts of the leader lock and the version sequence. Redis runs each one atomically,
//! and each that writes first compares the leader lock with the caller's token: a process that
//! lost the lock can write nothing. (A cycle's documents are written by a watched transaction:
//! `write_cycle` in the parent module.)

/// Take the next version, fenced by the lock like the write itself: a process that lost the
/// lock cannot even create the sequence in a Redis that came back empty (the new leader starts
/// it, above every version gateways may hold). Never at or below the caller's floor, the highest
/// version it has seen: a replica promoted by Sentinel may not have received the last `INCR`s of
/// the old primary, and a version must never be given twice. KEYS: leader, sequence. ARGV:
/// token, floor.
pub(super) const NEXT_VERSION_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this process does not hold the leader lock')
end
local version = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[2])
if version <= floor then
  version = floor + 1
  redis.call('SET', KEYS[2], string.format('%d', version))
end
return version
"#;

/// Take the lock if it is free, or extend it if it is already ours (after a blip, without
/// waiting for it to expire); in both cases answer the current sequence, so a standby knows how
/// far versions went. KEYS: leader, sequence. ARGV: token, ttl in ms.
pub(super) const ACQUIRE_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
local won = 0
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  won = 1
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  won = 1
end
return {won, tonumber(redis.call('GET', KEYS[2]) or '0')}
"#;

/// Extend the lock only if it is ours: 1 held, 0 lost, -1 ours but the sequence is gone (the
/// store was emptied under us). KEYS: leader, sequence. ARGV: token, ttl in ms.
pub(super) const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Delete the lock only if it is ours. KEYS: leader. ARGV: token.
pub(super) const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Raise the sequence to at least ARGV[2], fenced by the lock; answers the sequence before, or
/// -1 if it did not exist. A missing sequence starts at the server's Unix time in milliseconds,
/// not at 1: should Redis lose its data while every ingest restarts too (no process remembers
/// the versions gateways hold), versions still continue above them, as long as cycles averaged
/// fewer than a thousand a second (there is one per 10 s poll, plus zone cycles every 60 s).
/// The clock also covers a standby that takes over an emptied store: it knows the sequence
/// only as of its last try for the lock, a cycle or more behind the leader.
/// KEYS: leader, sequence. ARGV: token, floor.
pub(super) const CONTINUE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this process does not hold the leader lock')
end
local current = tonumber(redis.call('GET', KEYS[2]) or '-1')
local floor = tonumber(ARGV[2])
if current < 0 then
  local now = redis.call('TIME')
  floor = math.max(floor, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
if current < floor then
  redis.call('SET', KEYS[2], string.format('%d', floor))
end
return current
"#;

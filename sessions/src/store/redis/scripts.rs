//! The Redis store's Lua scripts: each store call that must read and
//! write in one step (a lock and its record, a save under the lease and
//! the release, an index update) is one script, hashed once per store.

use super::conn::Lua;
#[cfg(doc)]
use crate::store::INDEX_SLACK;

/// Reads one data key for the load scripts, refusing in Redis what would
/// be refused here anyway, so a huge or foreign value never crosses the
/// network. Answers `{status, value, n}`:
/// 0 missing, 1 found (`n` = PTTL), 2 foreign type or empty, 3 too large
/// (`n` = size).
const READ_FN: &str = r"
local function read(key, limit)
  local n = redis.pcall('STRLEN', key)
  if type(n) ~= 'number' then return {2, false, 0} end
  if n == 0 then
    if redis.call('EXISTS', key) == 1 then return {2, false, 0} end
    return {0, false, 0}
  end
  if n > limit then return {3, false, n} end
  return {1, redis.call('GET', key), redis.call('PTTL', key)}
end
";

/// KEYS: data. ARGV: size limit.
const LOAD_BODY: &str = "return read(KEYS[1], tonumber(ARGV[1]))";

/// Takes a lock for `token`, or confirms it is already `token`'s and
/// extends it: a call that ran but whose answer was lost (a Cluster client
/// resends a command whose connection dropped) takes the lock again rather
/// than finding it busy until its own lease runs out. A lock held by
/// someone else gets the `waiting` mark, so that its release wakes us,
/// and publishes `w<tag>`, which asks a process that keeps the session to
/// give it back (`pcall`, as for the release); at every attempt, so that
/// a message lost costs one backoff step.
const LOCK_FN: &str = r"
local function lock(key, waiting, token, lease, channel, tag)
  if redis.call('SET', key, token, 'NX', 'PX', lease) then return true end
  if redis.call('GET', key) ~= token then
    redis.call('SET', waiting, '1', 'PX', lease)
    redis.pcall('PUBLISH', channel, 'w' .. tag)
    return false
  end
  redis.call('PEXPIRE', key, lease)
  return true
end
";

/// Called right after a lock was deleted: if another process marked that
/// it waits, the mark goes and the session's tag (its key) is published,
/// which wakes that process's waiter (see "Locks" on [`RedisStore`]).
/// `pcall`: a user that may not publish (an ACL without the channel) must
/// not fail the save before it, which is done by then; waiters poll.
const RELEASED_FN: &str = r"
local function released(waiting, channel, tag)
  if redis.call('DEL', waiting) == 1 then redis.pcall('PUBLISH', channel, tag) end
end
";

/// KEYS: lock, waiting. ARGV: token, lease ms, channel, tag. 1: ours; 0:
/// held by someone else.
const LOCK_BODY: &str =
    "if lock(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 1 end return 0";

/// KEYS: data, lock, waiting. ARGV: token, lease ms, size limit, channel,
/// tag. Status -1: the lock is held by someone else.
const LOCK_AND_LOAD_BODY: &str = r"
if not lock(KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[4], ARGV[5]) then
  return {-1, false, 0}
end
return read(KEYS[1], tonumber(ARGV[3]))
";

/// KEYS: data, lock, waiting. ARGV: token, value, ttl ms, 'NX' or 'XX',
/// channel, tag. -1: the lock is no longer ours (nothing written); 0:
/// precondition failed (lock released); 1: written (lock released).
const SAVE_AND_UNLOCK_BODY: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local ok = redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3], ARGV[4])
redis.call('DEL', KEYS[2])
released(KEYS[3], ARGV[5], ARGV[6])
if ok then return 1 end
return 0
";

/// KEYS: data, lock. ARGV: token, value, ttl ms, 'NX' or 'XX', lease ms.
/// As [`SAVE_AND_UNLOCK`], but the lock stays ours with a fresh lease: for
/// a hand-over to the next request of this process.
const SAVE_AND_KEEP: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local ok = redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if ok then return 1 end
return 0
";

/// KEYS: lock, waiting. ARGV: token, channel, tag.
const RELEASE_BODY: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
released(KEYS[2], ARGV[2], ARGV[3])
return 1
";

/// KEYS: lock. ARGV: token, lease ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// KEYS: a user's index. ARGV: a session's key, its expiry (ms since the
/// epoch, with [`INDEX_SLACK`]), now. Adds or moves the session, drops what has expired, and
/// lets the whole index expire with its last session.
const INDEX: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
";

/// KEYS: data. ARGV: ttl ms, header length. `1`: moved; `0`: no such
/// session; otherwise the record has a user (format version 3, byte 4),
/// whose index entry must move first: not moved, and the start of the
/// record is answered, where the user is.
const TOUCH: &str = r"
local head = redis.pcall('GETRANGE', KEYS[1], 0, ARGV[2] - 1)
if type(head) ~= 'string' or head == '' then return 0 end
if string.byte(head, 5) == 3 then return head end
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
";

/// KEYS: data. ARGV: header length. Deletes the session and answers the
/// start of what it held, where a record keeps its user, so that the
/// user's index entry can go too (empty when there was nothing).
const DELETE: &str = r"
local head = redis.pcall('GETRANGE', KEYS[1], 0, ARGV[1] - 1)
redis.call('DEL', KEYS[1])
if type(head) ~= 'string' then return '' end
return head
";

/// A regenerated session's first save: the new record is written only
/// while the old one lives, and the old one goes with it. Answers the old
/// record's header (its user, for the index), or nil when nothing was
/// written.
const REPLACE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local head = redis.call('GETRANGE', KEYS[1], 0, ARGV[3] - 1)
if not redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return false end
redis.call('DEL', KEYS[1])
return head
";

/// The scripts, hashed once per store (clones share them).
pub(super) struct Scripts {
    pub(super) load: Lua,
    pub(super) lock: Lua,
    pub(super) lock_and_load: Lua,
    pub(super) save_and_unlock: Lua,
    pub(super) save_and_keep: Lua,
    pub(super) release: Lua,
    pub(super) renew: Lua,
    pub(super) index: Lua,
    pub(super) touch: Lua,
    pub(super) delete: Lua,
    pub(super) replace: Lua,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            load: Lua::new(format!("{READ_FN}{LOAD_BODY}")),
            lock: Lua::new(format!("{LOCK_FN}{LOCK_BODY}")),
            lock_and_load: Lua::new(format!("{READ_FN}{LOCK_FN}{LOCK_AND_LOAD_BODY}")),
            save_and_unlock: Lua::new(format!("{RELEASED_FN}{SAVE_AND_UNLOCK_BODY}")),
            save_and_keep: Lua::new(SAVE_AND_KEEP.to_owned()),
            release: Lua::new(format!("{RELEASED_FN}{RELEASE_BODY}")),
            renew: Lua::new(RENEW.to_owned()),
            index: Lua::new(INDEX.to_owned()),
            touch: Lua::new(TOUCH.to_owned()),
            delete: Lua::new(DELETE.to_owned()),
            replace: Lua::new(REPLACE.to_owned()),
        }
    }
}

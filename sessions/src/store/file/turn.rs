//! Turns between processes on the file store (the rule of
//! [`TURN`](crate::store::TURN)): a waiter that finds a session's flock
//! held claims the next turn in `session-<key>.turn` — the file holds its
//! owner token, the file's modification time says when it claimed or last
//! renewed — unless another waiter's claim is live. A taker leaves the
//! flock alone while another waiter's claim lives, and removes its own
//! claim (or a lapsed one) once it holds the flock.
//!
//! Without turns, a process that releases the flock lets its own next
//! request take it again at once, while another process, which can only
//! poll, finds it held at nearly every attempt. A turn is only about
//! fairness: a claim lost to a race, a crash or a hostile file costs at
//! most one [`TURN`](crate::store::TURN) of waiting, never exclusion.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use crate::store::TURN;

/// The longest owner token read back (they are 40 hex digits).
const MAX_OWNER: u64 = 64;

/// A claim as the file says it: whose, and whether it still lives.
struct Claim {
    owner: Vec<u8>,
    live: bool,
}

/// Whether another waiter's claim on the session's next turn lives: then
/// this one must not take the flock, even if it is free.
pub(super) fn others(path: &Path, owner: &str) -> io::Result<bool> {
    Ok(read(path)?.is_some_and(|c| c.live && c.owner != owner.as_bytes()))
}

/// Claims the next turn for `owner`, or renews its claim; does nothing
/// while another waiter's claim lives.
pub(super) fn claim(path: &Path, owner: &str) -> io::Result<()> {
    match read(path)? {
        Some(c) if c.owner == owner.as_bytes() => {
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            file.set_modified(SystemTime::now())
        }
        Some(c) if c.live => Ok(()),
        found => {
            if found.is_some() {
                // Lapsed: whoever removes and creates first has the turn.
                remove(path)?;
            }
            match create(path, owner) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                done => done,
            }
        }
    }
}

/// Called by the holder of the flock: its own claim has served, and a
/// lapsed one of another is moot.
pub(super) fn end(path: &Path, owner: &str) -> io::Result<()> {
    match read(path)? {
        Some(c) if c.owner == owner.as_bytes() || !c.live => remove(path),
        _ => Ok(()),
    }
}

/// Called by a waiter that gives up: removes its claim, if it has one.
pub(super) fn withdraw(path: &Path, owner: &str) -> io::Result<()> {
    match read(path)? {
        Some(c) if c.owner == owner.as_bytes() => remove(path),
        _ => Ok(()),
    }
}

/// Whether a turn file is a lapsed claim, for clean-up.
pub(super) fn lapsed(path: &Path) -> io::Result<bool> {
    Ok(read(path)?.is_some_and(|c| !c.live))
}

fn read(path: &Path) -> io::Result<Option<Claim>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("a turn file that is not a regular file"));
    }
    // A time in the future by more than a turn is as lapsed as one in the
    // past: a clock set back, or a planted file, holds nobody up for good.
    let now = SystemTime::now();
    let age = match now.duration_since(meta.modified()?) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    let mut owner = Vec::new();
    file.take(MAX_OWNER).read_to_end(&mut owner)?;
    Ok(Some(Claim {
        owner,
        live: age < TURN,
    }))
}

fn create(path: &Path, owner: &str) -> io::Result<()> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(owner.as_bytes())
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_claim_is_first_come_renewed_by_its_owner_and_ended_by_the_taker() {
        let dir = std::env::temp_dir().join(format!("sessions-turn-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("session-x.turn");
        let _ = fs::remove_file(&path);
        assert!(!others(&path, "a").unwrap());
        claim(&path, "a").unwrap();
        claim(&path, "b").unwrap();
        assert!(others(&path, "b").unwrap(), "b must wait for a's turn");
        assert!(!others(&path, "a").unwrap());
        claim(&path, "a").unwrap();
        end(&path, "b").unwrap();
        assert!(others(&path, "b").unwrap(), "b cannot end a's live turn");
        end(&path, "a").unwrap();
        assert!(!path.exists());
        claim(&path, "b").unwrap();
        withdraw(&path, "a").unwrap();
        assert!(path.exists(), "a cannot withdraw b's claim");
        withdraw(&path, "b").unwrap();
        assert!(!path.exists());

        // A lapsed claim holds nobody up, and the next claimer takes over.
        claim(&path, "a").unwrap();
        let old = SystemTime::now() - TURN - Duration::from_millis(10);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(lapsed(&path).unwrap());
        assert!(!others(&path, "b").unwrap());
        claim(&path, "b").unwrap();
        assert!(others(&path, "a").unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! The file store when its disk fills up or turns read-only, end to end:
//! 503s while it lasts, no panic, no damaged record, and service again by
//! itself afterwards. The directory is a small tmpfs mounted for the test
//! (root only; outside CI a machine that cannot mount skips).

#![cfg(all(feature = "file", target_os = "linux"))]

use sessions_test_support as common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::app::serve_app;
use common::ci::skip;
use common::client::Client;
use common::temp::TempDir;
use server_sessions::store::{FileStore, SessionAdmin, SessionStore};
use server_sessions::SessionConfig;

/// A tmpfs of `size` at a fresh directory; unmounted when dropped.
struct Mount(TempDir);

impl Mount {
    fn new(size: &str) -> Option<Mount> {
        let dir = TempDir::new("mount");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return skip("a tmpfs cannot be mounted here (the test needs root)");
        }
        Some(Mount(dir))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mount {
    /// Unmounts; the directory goes with the `TempDir` afterwards.
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// Stores a big value, to fill the disk quickly.
const BALLAST: &str = "/put?key=ballast&len=30000";

/// Every session file in the directory decodes, and every session listed
/// loads.
async fn all_intact(store: &FileStore) -> usize {
    use futures_util::StreamExt;
    let keys: Vec<_> = store.keys().collect().await;
    for key in &keys {
        let key = key.as_ref().unwrap();
        assert!(
            store.load(key).await.unwrap().is_some(),
            "a damaged session"
        );
    }
    keys.len()
}

#[tokio::test]
async fn a_full_disk_answers_503_and_recovers() {
    let Some(mount) = Mount::new("512k") else {
        return;
    };
    let store = FileStore::open(mount.path().join("sessions")).unwrap();
    let addr = serve_app(SessionConfig::default(), store.clone()).await;
    let mut alice = Client::new(addr);
    assert_eq!(alice.get("/").await.body, "1");
    assert_eq!(alice.get("/").await.body, "2");

    // Fill the disk with other visitors' sessions until a save fails.
    let mut refused = None;
    for _ in 0..200 {
        let r = Client::new(addr).get_with(BALLAST, None).await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.body, "session store unavailable\n");
    assert_eq!(refused.set_cookie, None, "a cookie for a session not saved");

    // Alice's session is intact; her next write fails or fits, never
    // corrupts.
    let r = alice.get_with("/", alice.cookie.as_deref()).await;
    assert!(r.status == 200 || r.status == 503, "{r:?}");
    all_intact(&store).await;

    // Room again: everything works by itself.
    mount.remount("size=4m");
    let r = alice.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body == "3" || r.body == "4", "{}", r.body);
    assert_eq!(Client::new(addr).get_with(BALLAST, None).await.status, 200);
    assert!(all_intact(&store).await > 2);
    // No temporary files left behind by the failed writes.
    let leftovers: Vec<_> = std::fs::read_dir(mount.path().join("sessions"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_read_only_directory_answers_503_and_recovers() {
    let Some(mount) = Mount::new("4m") else {
        return;
    };
    let store = FileStore::open(mount.path().join("sessions")).unwrap();
    let addr = serve_app(SessionConfig::default(), store.clone()).await;
    let mut bob = Client::new(addr);
    assert_eq!(bob.get("/").await.body, "1");

    mount.remount("ro");
    let r = bob.get_with("/", bob.cookie.as_deref()).await;
    assert_eq!(r.status, 503, "{r:?}");
    let r = Client::new(addr).get_with("/", None).await;
    assert_eq!(r.status, 503, "{r:?}");
    // Clean-up reports the failure; it does not panic or delete.
    let _ = store.clean_up().await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    mount.remount("rw");
    assert_eq!(bob.get("/").await.body, "2", "the session did not survive");
    assert_eq!(all_intact(&store).await, 1);
}

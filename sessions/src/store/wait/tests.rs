//! The lock waits' tests: exclusion, timeouts, wake-ups, hand-overs, and
//! no entry left behind.

use super::*;

#[tokio::test]
async fn exclusion_timeout_and_no_leak() {
    let locks = Arc::new(LocalLocks::new());
    let key = StoreKey::generate().unwrap();
    let g = locks.lock(&key, Duration::from_secs(1)).await.unwrap();
    assert!(locks.try_lock(&key).is_none());
    assert!(locks.lock(&key, Duration::from_millis(20)).await.is_none());
    assert_eq!(locks.len(), 1);
    drop(g);
    assert_eq!(locks.len(), 0);
    let g = locks.try_lock(&key).unwrap();
    drop(g);
    assert_eq!(locks.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_leave_nothing_behind() {
    let locks = Arc::new(LocalLocks::new());
    let key = StoreKey::generate().unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (locks, counter) = (locks.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            // Some waiters give up early, exercising the cancel path.
            let wait = if i % 5 == 0 { 1 } else { 5_000 };
            if let Some(_g) = locks.lock(&key, Duration::from_millis(wait)).await {
                let n = counter.load(std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
                counter.store(n + 1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(counter.load(std::sync::atomic::Ordering::SeqCst) >= 40);
    assert_eq!(locks.len(), 0);
}

/// A wait too long for the clock (a `lock_timeout` set in code) is
/// a long wait, not a panic.
#[tokio::test]
async fn an_endless_wait_is_a_wait() {
    let waits = LockWaits::new();
    let key = StoreKey::generate().unwrap();
    let waiter = waits.enter(&key, Duration::MAX).await.unwrap();
    assert!(matches!(
        waiter.timed_out(),
        Error::LockTimeout(Duration::MAX)
    ));
    drop(waiter);
    assert!(waits.is_idle());
}

#[tokio::test]
async fn a_wake_ends_the_pause_and_a_timeout_ends_the_wait() {
    let waits = LockWaits::new();
    let key = StoreKey::generate().unwrap();
    let mut waiter = waits.enter(&key, Duration::from_secs(30)).await.unwrap();
    // A wake that comes before the pause is kept, not lost.
    waits.wake(&key);
    let started = Instant::now();
    for _ in 0..10 {
        waits.wake(&key);
        waiter.pause().await.unwrap();
    }
    // Ten backoff steps would take at least 2+4+…+50 ms.
    assert!(started.elapsed() < Duration::from_millis(200));
    drop(waiter);
    assert!(waits.is_idle());

    let mut waiter = waits.enter(&key, Duration::from_millis(30)).await.unwrap();
    let mut pauses = 0;
    let err = loop {
        match waiter.pause().await {
            Ok(()) => pauses += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::LockTimeout(_)), "{err:?}");
    assert!(pauses >= 2, "backed off {pauses} times in 30 ms");
    // A second request of this process queues behind the first.
    assert!(matches!(
        waits.enter(&key, Duration::from_millis(10)).await,
        Err(Error::LockTimeout(_))
    ));
    let local = waiter.granted();
    assert!(!waits.is_idle());
    drop(local);
    assert!(waits.is_idle());
}

/// Counts its drops: a hand-over nobody takes must still be dropped,
/// which is what releases the backend lock it carries.
struct Dropped(Arc<std::sync::atomic::AtomicU32>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_hand_over_reaches_the_next_waiter_or_is_dropped() {
    let waits = LockWaits::new();
    let key = StoreKey::generate().unwrap();
    let drops = Arc::new(std::sync::atomic::AtomicU32::new(0));

    let Entered::Front(first) = waits
        .enter_or_take::<Dropped>(&key, Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!("nothing was handed over yet");
    };
    let first = first.granted();
    assert!(!first.has_waiters());
    let next = {
        let waits = Arc::clone(&waits);
        tokio::spawn(async move {
            waits
                .enter_or_take::<Dropped>(&key, Duration::from_secs(5))
                .await
                .unwrap()
        })
    };
    while !first.has_waiters() {
        tokio::task::yield_now().await;
    }
    first.hand_over(Box::new(Dropped(Arc::clone(&drops))));
    match next.await.unwrap() {
        Entered::HandedOver(local, value) => {
            assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 0);
            drop(value);
            drop(local);
        }
        Entered::Front(_) => panic!("the hand-over was lost"),
    }
    assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(waits.is_idle());

    // Handed over with nobody left to take it: dropped with the entry.
    let local = waits.local(&key, Duration::from_secs(1)).await.unwrap();
    local.hand_over(Box::new(Dropped(Arc::clone(&drops))));
    assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(waits.is_idle());
}

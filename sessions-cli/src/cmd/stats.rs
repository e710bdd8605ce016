//! `sessions stats`: how many sessions, how large, when they expire.

use futures_util::StreamExt;
use server_sessions::store::now_millis;

use super::StoreArgs;

/// Expiry buckets: upper bound in minutes from now, and label.
const BUCKETS: [(u64, &str); 5] = [
    (1, "< 1 min"),
    (10, "< 10 min"),
    (60, "< 1 h"),
    (24 * 60, "< 1 day"),
    (u64::MAX, ">= 1 day"),
];

pub(crate) async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let store = args.open().await?;
    let now = now_millis();
    let (mut count, mut total, mut largest) = (0u64, 0u64, 0usize);
    let mut histogram = [0u64; BUCKETS.len()];
    let mut keys = store.keys();
    while let Some(key) = keys.next().await {
        let Some(record) = store.load(&key?).await? else {
            continue;
        };
        count += 1;
        total += record.data.len() as u64;
        largest = largest.max(record.data.len());
        let minutes = record.expires.saturating_sub(now) / 60_000;
        let bucket = BUCKETS.iter().position(|(limit, _)| minutes < *limit);
        histogram[bucket.unwrap_or(BUCKETS.len() - 1)] += 1;
    }
    println!("sessions       {count}");
    println!("total bytes    {total}");
    println!("largest bytes  {largest}");
    println!("expiring in:");
    let widest = histogram.iter().copied().max().unwrap_or(0).max(1);
    for ((_, label), n) in BUCKETS.iter().zip(histogram) {
        let bar = "#".repeat((n * 40).div_ceil(widest) as usize);
        println!("  {label:<9} {n:>8}  {bar}");
    }
    Ok(())
}

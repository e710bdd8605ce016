//! The Redis store's admin side: its keys listed with `SCAN` (never
//! `KEYS`), a page at a time and master by master; counting by listing;
//! no clean-up, as Redis expires keys itself.

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::conn::ScanNode;
use super::{bounded, RedisStore};
use crate::id::StoreKey;
use crate::store::{Error, OnExpired, SessionAdmin};

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1_000;

impl RedisStore {
    /// One `SCAN` step on `node`: the next cursor and the sessions' keys on
    /// this page.
    async fn scan_page(&self, node: &ScanNode, cursor: u64) -> Result<(u64, Vec<StoreKey>), Error> {
        let mut conn = self.conn.clone();
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(scan_pattern(&self.prefix))
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) =
            bounded("listing sessions", conn.run_on(node, scan)).await?;
        let prefix = self.prefix.as_bytes();
        let keys = keys
            .iter()
            .filter_map(|key| {
                let tagged = key.strip_prefix(prefix)?;
                let hex = tagged.strip_prefix(b"{")?.strip_suffix(b"}")?;
                StoreKey::from_bytes(hex).ok()
            })
            .collect();
        Ok((next, keys))
    }

    /// The keys of the sessions stored on one node, a page at a time.
    fn node_keys(&self, node: ScanNode) -> BoxStream<'_, Result<StoreKey, Error>> {
        stream::unfold(Some(0u64), move |cursor| {
            let node = node.clone();
            async move {
                let page = match self.scan_page(&node, cursor?).await {
                    Ok((0, keys)) => (keys.into_iter().map(Ok).collect::<Vec<_>>(), None),
                    Ok((next, keys)) => (keys.into_iter().map(Ok).collect(), Some(next)),
                    Err(e) => (vec![Err(e)], None),
                };
                Some(page)
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }
}

/// The `SCAN MATCH` pattern of data keys: the prefix with glob characters
/// escaped, then a 64-character hash tag. Lock keys end in `:lock` or
/// `:waiting` and do not match.
fn scan_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 48);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('{');
    p.extend(std::iter::repeat_n('?', 64));
    p.push('}');
    p
}

#[async_trait]
impl SessionAdmin for RedisStore {
    async fn count(&self) -> Result<u64, Error> {
        self.keys()
            .try_fold(0, |n, _| async move { Ok(n + 1) })
            .await
    }

    fn keys(&self) -> BoxStream<'_, Result<StoreKey, Error>> {
        // SCAN, never KEYS: one page at a time, without blocking a server;
        // a cursor belongs to one server, so a Cluster is scanned master
        // by master.
        stream::once(async move {
            let mut conn = self.conn.clone();
            bounded("listing sessions", conn.scan_nodes()).await
        })
        .flat_map(move |nodes| match nodes {
            Ok(nodes) => stream::iter(nodes)
                .flat_map(move |node| self.node_keys(node))
                .boxed(),
            Err(e) => stream::iter([Err(e)]).boxed(),
        })
        .boxed()
    }

    async fn clean_up_and_report(&self, _: OnExpired<'_>) -> Result<u64, Error> {
        // Redis expires keys by itself.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_pattern_escapes_globs() {
        let p = scan_pattern("a*b?[c]\\:");
        assert!(p.starts_with(r"a\*b\?\[c\]\\:{"), "{p}");
        assert!(p.ends_with("?}"));
        assert_eq!(p.matches('?').count(), 65);
    }
}

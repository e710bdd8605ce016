//! The results: a table on stdout, a JSON list, an SVG bar chart, and the
//! benchmark's targets (listed in benches/README.md, "Reading the
//! table") checked against them.

use std::fmt::Write as _;

use serde::Serialize;

pub(crate) const MANY: &str = "many sessions";
pub(crate) const HOT: &str = "one hot session";
pub(crate) const NEW: &str = "new visitors";
pub(crate) const SLOW64: &str = "slow handler 64";
pub(crate) const SLOW256: &str = "slow handler 256";
pub(crate) const BURST: &str = "page burst";
pub(crate) const TWO: &str = "two processes";
pub(crate) const MEMORY: &str = "memory";

const BARE: &str = "bare axum";
const OURS: &str = "sessions";
const PEER: &str = "tower-sessions";
const OURS_ACTIX: &str = "sessions actix";
const ACTIX_PEER: &str = "actix-session";

/// One line of results. Fields that do not apply to a workload are `None`
/// (null in JSON).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) workload: &'static str,
    pub(crate) store: &'static str,
    pub(crate) system: &'static str,
    /// The client's connections.
    pub(crate) connections: Option<usize>,
    /// 200 answers per second, median of the rounds.
    pub(crate) rps: Option<f64>,
    /// Median of the rounds' medians: of request latency, or for the page
    /// burst of the time until all of a burst's requests were answered.
    pub(crate) p50_ms: Option<f64>,
    /// Median of the rounds' 99th percentiles, of the same.
    pub(crate) p99_ms: Option<f64>,
    /// Workloads that share a session (hot session, page burst, two
    /// processes): answered 200 less what the counters grew by, summed over
    /// the measured rounds.
    pub(crate) lost_updates: Option<u64>,
    /// PostgreSQL: the most connections the system's server processes held
    /// at the end of a round (`pg_stat_activity`, by `application_name`).
    pub(crate) pg_connections: Option<u64>,
    /// How busy the client process was: its CPU time over its threads'
    /// time, median of the rounds. Near 1, the client set the pace.
    pub(crate) client_busy: Option<f64>,
    /// Memory: resident set after the sessions, in MB.
    pub(crate) rss_mb: Option<f64>,
    /// Memory: growth per session less the session's data, in bytes.
    pub(crate) bytes_per_session: Option<f64>,
    /// Non-200 answers and failed connections over the measured rounds.
    #[serde(skip)]
    pub(crate) errors: u64,
    /// Hot session: the 200 answers the lost updates are out of.
    #[serde(skip)]
    pub(crate) answered: Option<u64>,
}

impl Row {
    pub(crate) fn new(workload: &'static str, store: &'static str, system: &'static str) -> Self {
        Row {
            workload,
            store,
            system,
            connections: None,
            rps: None,
            p50_ms: None,
            p99_ms: None,
            lost_updates: None,
            pg_connections: None,
            client_busy: None,
            rss_mb: None,
            bytes_per_session: None,
            errors: 0,
            answered: None,
        }
    }
}

fn find<'a>(rows: &'a [Row], workload: &str, store: &str, system: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.workload == workload && r.store == store && r.system == system)
}

/// Ours against the peer on the same workload and store (requests/s; for
/// memory, the peer's bytes per session over ours, so that above 1 is
/// better everywhere).
/// Ours through actix-web is set against actix-session: on the `ram` row
/// against its cookie store.
fn vs_peer(rows: &[Row], row: &Row) -> Option<f64> {
    let peer = match (row.system, row.store) {
        (OURS, _) => find(rows, row.workload, row.store, PEER)?,
        (OURS_ACTIX, "ram") => find(rows, row.workload, "cookie", ACTIX_PEER)?,
        (OURS_ACTIX, store) => find(rows, row.workload, store, ACTIX_PEER)?,
        _ => return None,
    };
    if row.workload == MEMORY {
        Some(peer.bytes_per_session? / row.bytes_per_session?)
    } else {
        Some(row.rps? / peer.rps?)
    }
}

/// Ours against bare axum on the same workload.
fn vs_bare(rows: &[Row], row: &Row) -> Option<f64> {
    if row.system == BARE {
        return None;
    }
    let bare = rows
        .iter()
        .find(|r| r.workload == row.workload && r.system == BARE)?;
    Some(row.rps? / bare.rps?)
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

/// The table, for stdout and the README.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<13} {:<14} {:>5} {:>8} {:>7} {:>7} {:>14} {:>8} {:>6} {:>6} {:>7} {:>7} {:>6}",
        "workload",
        "store",
        "system",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "lost updates",
        "pg conns",
        "rss MB",
        "B/sess",
        "vs peer",
        "vs bare",
        "errors"
    );
    for r in rows {
        let lost = match (r.lost_updates, r.answered) {
            (Some(l), Some(a)) if a > 0 => {
                format!("{l} ({:.0}%)", 100.0 * l as f64 / a as f64)
            }
            (Some(l), _) => l.to_string(),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<13} {:<14} {:>5} {:>8} {:>7} {:>7} {:>14} {:>8} {:>6} {:>6} {:>7} {:>7} {:>6}",
            r.workload,
            r.store,
            r.system,
            r.connections.map_or_else(|| "-".into(), |c| c.to_string()),
            num(r.rps, 0),
            num(r.p50_ms, 2),
            num(r.p99_ms, 2),
            lost,
            r.pg_connections.map_or_else(|| "-".into(), |c| c.to_string()),
            num(r.rss_mb, 1),
            num(r.bytes_per_session, 0),
            ratio(vs_peer(rows, r)),
            ratio(vs_bare(rows, r)),
            if r.rps.is_some() {
                r.errors.to_string()
            } else {
                "-".into()
            },
        );
    }
    out
}

/// The benchmark's targets (benches/README.md, "Reading the table"), each
/// met, missed, or not measured in this run.
pub(crate) fn targets(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut line = |what: String, value: Option<String>, ok: Option<bool>| {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "  {what:<58} {:>16}  {verdict}",
            value.unwrap_or_default()
        );
    };
    let ours_many_ram = find(rows, MANY, "ram", OURS);
    let r = ours_many_ram.and_then(|r| vs_bare(rows, r));
    line(
        "many sessions, ram: sessions >= 0.8x bare axum".into(),
        r.map(|r| format!("{r:.2}x")),
        r.map(|r| r >= 0.8),
    );
    let r = ours_many_ram.and_then(|r| vs_peer(rows, r));
    line(
        "many sessions, ram: sessions >= 1.7x tower-sessions".into(),
        r.map(|r| format!("{r:.2}x")),
        r.map(|r| r >= 1.7),
    );
    for r in rows
        .iter()
        .filter(|r| r.workload == HOT && r.system == OURS)
    {
        line(
            format!("one hot session, {}: sessions loses 0 updates", r.store),
            r.lost_updates.map(|l| l.to_string()),
            r.lost_updates.map(|l| l == 0),
        );
        let v = vs_peer(rows, r);
        line(
            format!(
                "one hot session, {}: sessions req/s >= tower-sessions",
                r.store
            ),
            v.map(|v| format!("{v:.2}x")),
            v.map(|v| v >= 1.0),
        );
    }
    for r in rows
        .iter()
        .filter(|r| (r.workload == BURST || r.workload == TWO) && r.system == OURS)
    {
        line(
            format!("{}, {}: sessions loses 0 updates", r.workload, r.store),
            r.lost_updates.map(|l| l.to_string()),
            r.lost_updates.map(|l| l == 0),
        );
    }
    for r in rows
        .iter()
        .filter(|r| r.workload == MANY && r.system == OURS && r.store != "ram")
    {
        let v = vs_peer(rows, r);
        line(
            format!(
                "many sessions, {}: sessions >= 1.0x tower-sessions",
                r.store
            ),
            v.map(|v| format!("{v:.2}x")),
            v.map(|v| v >= 1.0),
        );
    }
    let b = find(rows, MEMORY, "ram", OURS).and_then(|r| r.bytes_per_session);
    line(
        "memory: sessions <= 120 bytes per session over its data".into(),
        b.map(|b| format!("{b:.0} B")),
        b.map(|b| b <= 120.0),
    );
    out
}

/// The JSON list of rows.
pub(crate) fn json(rows: &[Row]) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(rows)? + "\n")
}

fn color(system: &str) -> &'static str {
    match system {
        BARE => "#9e9e9e",
        OURS => "#1f77b4",
        OURS_ACTIX => "#6baed6",
        ACTIX_PEER => "#d62728",
        _ => "#ff7f0e",
    }
}

/// `12345.6` as `12,346`.
fn grouped(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The table as horizontal bar charts, one panel per workload, written by
/// hand so that it needs no fonts or drawing library.
pub(crate) fn svg(rows: &[Row], title: &str) -> String {
    const WIDTH: f64 = 760.0;
    const LABEL: f64 = 210.0;
    const BAR_MAX: f64 = 370.0;
    const ROW: f64 = 22.0;
    let panels: [(&str, &str); 8] = [
        (MANY, "requests/s (more is better)"),
        (HOT, "requests/s (more is better); lost updates"),
        (NEW, "requests/s (more is better)"),
        (SLOW64, "requests/s (more is better); p99"),
        (SLOW256, "requests/s (more is better); p99"),
        (
            BURST,
            "p99 ms until all 6 answered (less is better); lost updates",
        ),
        (TWO, "requests/s (more is better); lost updates"),
        (MEMORY, "bytes per session over its data (less is better)"),
    ];
    let mut body = String::new();
    let mut y = 40.0;
    for (workload, unit) in panels {
        let panel: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
        let value = |r: &Row| match workload {
            MEMORY => r.bytes_per_session,
            BURST => r.p99_ms,
            _ => r.rps,
        };
        if panel.iter().all(|r| value(r).is_none()) {
            continue;
        }
        let max = panel
            .iter()
            .filter_map(|r| value(r))
            .fold(f64::MIN_POSITIVE, f64::max);
        let _ = writeln!(
            body,
            r#"<text x="10" y="{y}" class="h">{} <tspan class="u">— {}</tspan></text>"#,
            escape(workload),
            escape(unit)
        );
        y += 12.0;
        for r in panel {
            let Some(v) = value(r) else { continue };
            let w = (v / max * BAR_MAX).max(1.0);
            let label = if r.system == BARE {
                r.system.to_string()
            } else {
                format!("{} · {}", r.store, r.system)
            };
            let mut text = match workload {
                MEMORY => format!("{} B", grouped(v)),
                BURST => format!("{v:.1} ms"),
                _ => format!("{}/s", grouped(v)),
            };
            if workload == SLOW64 || workload == SLOW256 {
                if let Some(p99) = r.p99_ms {
                    let _ = write!(text, ", p99 {p99:.1} ms");
                }
                if let Some(n) = r.pg_connections {
                    let _ = write!(text, ", {n} pg conns");
                }
            }
            if let Some(l) = r.lost_updates {
                let _ = write!(text, ", lost {}", grouped(l as f64));
                if let Some(a) = r.answered.filter(|&a| a > 0) {
                    let _ = write!(text, " ({:.0}%)", 100.0 * l as f64 / a as f64);
                }
            }
            let _ = writeln!(
                body,
                r#"<text x="{lx}" y="{ty}" class="l">{label}</text><rect x="{LABEL}" y="{y}" width="{w:.1}" height="{h}" fill="{c}"/><text x="{vx:.1}" y="{ty}" class="v">{text}</text>"#,
                lx = LABEL - 8.0,
                ty = y + 13.0,
                label = escape(&label),
                h = ROW - 6.0,
                c = color(r.system),
                vx = LABEL + w + 6.0,
                text = escape(&text),
            );
            y += ROW;
        }
        y += 24.0;
    }
    // The title one line per `; `-separated part, so that it fits the
    // width; the panels move down by the lines added.
    let lines: Vec<&str> = title.split("; ").collect();
    let shift = 16.0 * (lines.len() - 1) as f64;
    let mut head = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 < lines.len() { ";" } else { "" };
        let _ = writeln!(
            head,
            r#"<text x="10" y="{}" class="t">{}{sep}</text>"#,
            20.0 + 16.0 * i as f64,
            escape(line)
        );
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<style>.h{{font-size:14px;font-weight:bold}}.u{{font-weight:normal;fill:#555}}.l{{font-size:12px;text-anchor:end}}.v{{font-size:12px}}.t{{font-size:12px;fill:#555}}</style>
<rect width="100%" height="100%" fill="white"/>
{head}<g transform="translate(0,{shift})">
{body}</g></svg>
"#,
        h = y + shift,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        let mut bare = Row::new(MANY, "none", BARE);
        bare.rps = Some(100.0);
        let mut ours = Row::new(MANY, "ram", OURS);
        ours.rps = Some(90.0);
        let mut peer = Row::new(MANY, "ram", PEER);
        peer.rps = Some(60.0);
        vec![bare, ours, peer]
    }

    #[test]
    fn ratios() {
        let rows = rows();
        assert_eq!(vs_bare(&rows, &rows[1]), Some(0.9));
        assert_eq!(vs_peer(&rows, &rows[1]), Some(1.5));
        assert!(targets(&rows).contains("1.50x"));
    }

    #[test]
    fn json_has_the_fields_with_nulls() {
        let v: serde_json::Value = serde_json::from_str(&json(&rows()).unwrap()).unwrap();
        let first = &v[0];
        for key in [
            "workload",
            "store",
            "system",
            "connections",
            "rps",
            "p50_ms",
            "p99_ms",
            "lost_updates",
            "pg_connections",
            "rss_mb",
        ] {
            assert!(first.get(key).is_some(), "{key}");
        }
        assert!(first["lost_updates"].is_null());
    }

    #[test]
    fn groups_digits() {
        assert_eq!(grouped(0.0), "0");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(grouped(1234.0), "1,234");
        assert_eq!(grouped(1234567.0), "1,234,567");
    }

    #[test]
    fn svg_is_one_document() {
        let s = svg(&rows(), "t <&>; second");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains(r#"y="20" class="t">t &lt;&amp;&gt;;</text>"#));
        assert!(s.contains(r#"y="36" class="t">second</text>"#));
        assert!(s.contains(r#"<g transform="translate(0,16)">"#));
    }
}

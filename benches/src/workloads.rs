//! The workloads: how many visitors, on how many connections each, asking
//! for what, and how they use cookies (README.md describes each).

use crate::report;

/// How a workload's visitors use cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sessions {
    /// Every visitor has a session of its own.
    PerVisitor,
    /// All visitors share one session.
    Shared,
    /// No cookie: each request makes a session.
    None,
    /// Not an HTTP workload (memory).
    Direct,
}

#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) flag: &'static str,
    /// Visitors, each on `burst` connections of its own.
    pub(crate) visitors: usize,
    /// Connections per visitor, all sending at once; 1 is a client sending
    /// one request after another.
    pub(crate) burst: usize,
    pub(crate) sessions: Sessions,
    /// What each request asks for (`/` or the slow handler's `/slow`).
    pub(crate) path: &'static str,
    /// Server processes sharing the store; 1 is the system served from
    /// this process.
    pub(crate) processes: usize,
    /// Whether the counters are read before and after each round, to count
    /// lost updates.
    pub(crate) check_lost: bool,
    /// Whether bare axum runs too, as the ceiling.
    pub(crate) bare: bool,
}

impl Workload {
    pub(crate) fn connections(&self) -> usize {
        self.visitors * self.burst
    }

    /// `--only NAME`: the flag, or the flag less its trailing number
    /// (`slow` for `slow64` and `slow256`).
    pub(crate) fn selected_by(&self, name: &str) -> bool {
        self.flag == name || self.flag.trim_end_matches(|c: char| c.is_ascii_digit()) == name
    }
}

pub(crate) const WORKLOADS: &[Workload] = &[
    Workload {
        name: report::MANY,
        flag: "many",
        visitors: 32,
        burst: 1,
        sessions: Sessions::PerVisitor,
        path: "/",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::HOT,
        flag: "hot",
        visitors: 16,
        burst: 1,
        sessions: Sessions::Shared,
        path: "/",
        processes: 1,
        check_lost: true,
        bare: false,
    },
    Workload {
        name: report::NEW,
        flag: "new",
        visitors: 32,
        burst: 1,
        sessions: Sessions::None,
        path: "/",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::SLOW64,
        flag: "slow64",
        visitors: 64,
        burst: 1,
        sessions: Sessions::PerVisitor,
        path: "/slow",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::SLOW256,
        flag: "slow256",
        visitors: 256,
        burst: 1,
        sessions: Sessions::PerVisitor,
        path: "/slow",
        processes: 1,
        check_lost: false,
        bare: true,
    },
    Workload {
        name: report::BURST,
        flag: "burst",
        visitors: 16,
        burst: 6,
        sessions: Sessions::PerVisitor,
        path: "/",
        processes: 1,
        check_lost: true,
        bare: true,
    },
    Workload {
        name: report::TWO,
        flag: "two",
        visitors: 16,
        burst: 1,
        sessions: Sessions::Shared,
        path: "/",
        processes: 2,
        check_lost: true,
        bare: false,
    },
    Workload {
        name: report::MEMORY,
        flag: "memory",
        visitors: 0,
        burst: 0,
        sessions: Sessions::Direct,
        path: "",
        processes: 0,
        check_lost: false,
        bare: false,
    },
];

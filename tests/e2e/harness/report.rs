//! `make reliability`'s record of each run of a fault case (tests/reliability/report.py prints
//! the table).

use super::calls_beyond_floor;
use chroma_sync_standin::StandIn;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Instant;

/// One run of a fault case for `make reliability`'s table. When `RELIABILITY_REPORT` names a
/// file, one JSON line per run is appended to it: the case's own figures (`set`), the Chroma
/// calls counted by the stand-in, and the outcome. The outcome is "fail" unless `pass` is
/// called, and the line is written on drop too, so a failed assertion is recorded as a failure
/// without changing how the test fails.
pub struct Report {
    fault: &'static str,
    standin: StandIn,
    fields: serde_json::Map<String, Value>,
    started: Instant,
    written: bool,
}

impl Report {
    /// Starts the run's clock; `seed` is the case's seed, if it has one.
    pub fn new(fault: &'static str, seed: Option<u64>, standin: &StandIn) -> Self {
        let mut report = Self {
            fault,
            standin: standin.clone(),
            fields: Default::default(),
            started: Instant::now(),
            written: false,
        };
        report.set("seed", seed);
        report
    }

    /// Records a figure of the case (`objects`, `converge_secs`, `invariant`, ...).
    pub fn set(&mut self, key: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).expect("a JSON value");
        self.fields.insert(key.to_owned(), value);
    }

    /// Every assertion held.
    pub fn pass(mut self) {
        self.write("pass");
    }

    fn write(&mut self, outcome: &str) {
        self.written = true;
        let Some(path) = std::env::var_os("RELIABILITY_REPORT") else {
            return;
        };
        let s = &self.standin;
        let calls = |endpoint| s.calls(endpoint, "*");
        let committed = s.created_total();
        let (floor, extra) = calls_beyond_floor(s);
        let mut line = json!({
            "fault": self.fault,
            "outcome": outcome,
            "at": jiff::Timestamp::now().to_string(),
            "creates": calls("create_source"),
            "committed": committed,
            "deletes": calls("delete_source"),
            "removed": floor - committed,
            "lists": calls("list_sources"),
            "gets": calls("get_source"),
            "floor": floor,
            "extra": extra,
            "injected": s.injected(),
            "total_secs": self.started.elapsed().as_secs_f64(),
        });
        line.as_object_mut()
            .unwrap()
            .extend(std::mem::take(&mut self.fields));
        // One write per line, so runs in parallel append whole lines. No panic here: this may
        // run while a failed assertion unwinds.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot append to {}: {e}", path.display());
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.written {
            self.write("fail");
        }
    }
}

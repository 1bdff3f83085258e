//! BPF programs' own run time (`kernel.bpf_stats_enabled=1`, read with bpftool): the figure
//! that stays stable on a noisy machine. A tool's programs are the ones loaded after it started.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result};

/// Turns run-time accounting on for as long as it lives, and restores the old setting.
pub struct StatsOn {
    before: String,
}

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl StatsOn {
    pub fn new() -> Result<StatsOn> {
        let before = std::fs::read_to_string(SYSCTL).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(SYSCTL, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(StatsOn { before })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, self.before.trim());
    }
}

/// One program's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgStat {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

fn programs() -> Vec<serde_json::Value> {
    Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Ids of every loaded program.
pub fn ids() -> Vec<u64> {
    programs().iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// Counters of the programs loaded since `before`, by name (programs of one name summed).
pub fn since(before: &[u64]) -> BTreeMap<String, ProgStat> {
    let mut out: BTreeMap<String, ProgStat> = BTreeMap::new();
    for p in programs() {
        let Some(id) = p["id"].as_u64() else { continue };
        if before.contains(&id) {
            continue;
        }
        let name = p["name"].as_str().unwrap_or("?").to_string();
        let e = out.entry(name).or_default();
        e.run_time_ns += p["run_time_ns"].as_u64().unwrap_or(0);
        e.run_cnt += p["run_cnt"].as_u64().unwrap_or(0);
    }
    out
}

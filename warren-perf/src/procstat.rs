//! CPU time and memory of a process, read from `/proc`.

use anyhow::{Context, Result, anyhow};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS, KiB.
    pub rss_kb: u64,
    /// VmHWM (peak RSS over the process's life), KiB.
    pub hwm_kb: u64,
}

/// Sample a process (`"self"` for warren-perf itself).
pub fn sample(pid: &str) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(ProcSample {
        cpu_ticks: parse_stat_cpu(&stat).ok_or_else(|| anyhow!("cannot parse /proc/{pid}/stat"))?,
        rss_kb: parse_status_kb(&status, "VmRSS").unwrap_or(0),
        hwm_kb: parse_status_kb(&status, "VmHWM").unwrap_or(0),
    })
}

/// utime + stime (fields 14 and 15) from `/proc/PID/stat`. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   123 kB` line from `/proc/PID/status`, in KiB.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second (`getconf CLK_TCK`); 100, Linux's USER_HZ, if
/// getconf is missing.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// CPU seconds between two samples.
pub fn cpu_seconds(start: &ProcSample, end: &ProcSample) -> f64 {
    end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / clock_ticks() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = "3337 (beam.smp (x) y) S 1 3337 3337 0 -1 4194560 123 0 0 0 \
                    1500 250 0 0 20 0 30 0 1234 5678 910 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some(1750));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\twarren\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn samples_itself() {
        let s = sample("self").unwrap();
        assert!(s.rss_kb > 0);
        assert!(clock_ticks() > 0);
    }
}

//! Server processes watched from outside: resident memory and CPU time from `/proc`.

use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`, 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// One sample of a set of processes, summed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Sample {
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Proportional set size, KiB: shared pages divided among their sharers, so the processes of
    /// one server (nginx master and workers sharing nchan's shared memory) are not counted twice.
    pub pss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
    /// How many of the processes were alive.
    pub alive: usize,
}

/// Sum over `pids`; PSS only when `pss` (reading `smaps_rollup` walks the page tables of the
/// process, which for a multi-GiB server takes a while and contends with its own page faults).
pub fn sample(pids: &[u32], pss: bool) -> Sample {
    let mut s = Sample::default();
    for &pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        s.alive += 1;
        s.rss_kib += field_kib(&status, "VmRSS:");
        if pss && let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            s.pss_kib += field_kib(&rollup, "Pss:");
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            s.cpu_s += cpu_seconds(&stat);
        }
    }
    s
}

fn field_kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name (field 2) may
/// hold spaces, so count fields after its closing parenthesis.
fn cpu_seconds(stat: &str) -> f64 {
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): field n is f[n - 3].
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / CLK_TCK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_sampled() {
        let s = sample(&[std::process::id()], true);
        assert_eq!(s.alive, 1);
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn stat_with_spaces_in_name() {
        let stat = "123 (a b) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert!((cpu_seconds(stat) - 3.0).abs() < 1e-9);
    }
}

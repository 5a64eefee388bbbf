//! What every measurement report carries: the machine, the date, and summary statistics.
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The first fields of every scenario's report (written flat into its JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ReportHeader {
    pub scenario: &'static str,
    pub date_utc: String,
    /// This process's command line.
    pub command: String,
    pub machine: Machine,
}

impl ReportHeader {
    /// The header of a `scenario` report starting now on this machine, and the report's file
    /// stamp (see [`now_utc`]).
    pub fn now(scenario: &'static str) -> (ReportHeader, String) {
        let (date_utc, file_stamp) = now_utc();
        let header = ReportHeader {
            scenario,
            date_utc,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: Machine::detect(),
        };
        (header, file_stamp)
    }

    /// A header with no date or command (for the report tests).
    #[cfg(test)]
    pub(crate) fn for_tests(scenario: &'static str) -> ReportHeader {
        ReportHeader {
            scenario,
            date_utc: String::new(),
            command: String::new(),
            machine: Machine::detect(),
        }
    }
}

/// The machine a measurement ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// `/proc/loadavg` when the measurement started (other work on the machine).
    pub loadavg: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let loadavg = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        Machine {
            nproc: crate::cpu::nproc(),
            cpu_model,
            kernel,
            loadavg,
        }
    }
}

/// Median, minimum and maximum of a set of runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// `None` for an empty set. The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// Seconds since the epoch → (year, month, day, hour, minute, second) in UTC.
pub fn civil_utc(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Now as `2026-11-20T14:03:05Z` and as `2026-11-20-140305` (for file names).
pub fn now_utc() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = civil_utc(secs);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}-{h:02}{mi:02}{s:02}"),
    )
}

/// Writes `value` as pretty JSON to `<dir>/<name>-<stamp>.json` (creating `dir`) and returns
/// the file's path.
pub fn save_json<T: Serialize>(value: &T, dir: &Path, name: &str, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}-{stamp}.json"));
    let json = serde_json::to_string_pretty(value)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        assert_eq!(Stat::of(&[]), None);
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_utc(0), (1970, 1, 1, 0, 0, 0));
        // 2000-02-29 12:34:56 UTC
        assert_eq!(civil_utc(951_827_696), (2000, 2, 29, 12, 34, 56));
        // 2026-11-20 00:00:00 UTC
        assert_eq!(civil_utc(1_795_132_800), (2026, 11, 20, 0, 0, 0));
    }

    #[test]
    fn machine_is_detected() {
        let m = Machine::detect();
        assert!(m.nproc >= 1);
        assert!(!m.kernel.is_empty());
    }
}

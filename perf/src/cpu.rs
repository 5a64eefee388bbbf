//! CPU time accounting from /proc: per-CPU busy time (`/proc/stat`) and per-task CPU time
//! (`/proc/PID/stat`), both in clock ticks (10 ms at the usual USER_HZ of 100), converted
//! to nanoseconds. Over a 3-second window a tick is 0.3 % of one CPU.
use anyhow::{Context, Result, bail};

/// One snapshot of `/proc/stat`'s per-CPU lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTimes {
    /// Indexed by CPU number: (busy ticks, total ticks). Busy is everything but idle and
    /// iowait; steal is counted as neither busy nor idle-for-us, i.e. excluded from busy.
    pub cpus: Vec<(u64, u64)>,
}

impl CpuTimes {
    pub fn read() -> Result<CpuTimes> {
        let s = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        parse_proc_stat(&s)
    }

    /// Busy nanoseconds of `cpu` between `earlier` and `self`.
    pub fn busy_ns_since(&self, earlier: &CpuTimes, cpu: usize) -> Result<u64> {
        let (Some(now), Some(then)) = (self.cpus.get(cpu), earlier.cpus.get(cpu)) else {
            bail!("no CPU {cpu} in /proc/stat");
        };
        Ok(ticks_to_ns(now.0.saturating_sub(then.0)))
    }
}

fn ticks_to_ns(t: u64) -> u64 {
    t.saturating_mul(1_000_000_000) / crate::sys::clock_ticks_per_sec()
}

/// Parses the `cpuN user nice system idle iowait irq softirq steal …` lines.
pub fn parse_proc_stat(s: &str) -> Result<CpuTimes> {
    let mut cpus: Vec<(u64, u64)> = Vec::new();
    for line in s.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(num) = name.strip_prefix("cpu") else {
            continue;
        };
        if num.is_empty() {
            continue; // the aggregate line
        }
        let idx: usize = num
            .parse()
            .with_context(|| format!("bad /proc/stat line {line:?}"))?;
        let v: Vec<u64> = it
            .take(8)
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad /proc/stat line {line:?}"))?;
        if v.len() < 5 {
            bail!("short /proc/stat line {line:?}");
        }
        let total: u64 = v.iter().sum();
        let steal = v.get(7).copied().unwrap_or(0);
        let busy = total - v[3] - v[4] - steal;
        if cpus.len() <= idx {
            cpus.resize(idx + 1, (0, 0));
        }
        cpus[idx] = (busy, total);
    }
    if cpus.is_empty() {
        bail!("no per-CPU lines in /proc/stat");
    }
    Ok(CpuTimes { cpus })
}

/// CPU time (user + system) of task `pid` (a process: all its threads; or one kernel
/// thread) in nanoseconds.
pub fn task_cpu_ns(pid: i32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(ticks_to_ns(parse_task_ticks(&s)?))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name in
/// parentheses may contain spaces, so fields are counted after the last ')'.
pub fn parse_task_ticks(s: &str) -> Result<u64> {
    let rest = s
        .rfind(')')
        .map(|i| &s[i + 1..])
        .context("bad /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11.
    if f.len() < 13 {
        bail!("short /proc/PID/stat");
    }
    let utime: u64 = f[11].parse().context("bad utime")?;
    let stime: u64 = f[12].parse().context("bad stime")?;
    Ok(utime + stime)
}

/// Kernel threads whose name starts with `napi/<dev>-`.
pub fn napi_threads(dev: &str) -> Result<Vec<i32>> {
    let want = format!("napi/{dev}-");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").context("reading /proc")? {
        let e = e?;
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(e.path().join("comm"))
            && comm.trim_end().starts_with(&want)
        {
            out.push(pid);
        }
    }
    Ok(out)
}

/// The nice value of this process's scheduler autogroup (its session), restored on drop.
/// With `kernel.sched_autogroup_enabled=1` CPU time is first shared between sessions, and a
/// thread's own nice value only counts inside its session: on a machine shared with other
/// sessions, the measured tasks get their CPUs only if their session's nice is raised too.
/// Kernel threads (NAPI) are outside autogroups; their own nice value is what counts.
pub struct AutogroupNice {
    old: Option<i32>,
}

impl AutogroupNice {
    /// Sets this process's autogroup nice value (no-op without autogroup support).
    pub fn set(nice: i32) -> Result<AutogroupNice> {
        let path = "/proc/self/autogroup";
        let Ok(cur) = std::fs::read_to_string(path) else {
            return Ok(AutogroupNice { old: None }); // no autogroup support
        };
        // "/autogroup-12 nice 0"; empty when the process is not in an autogroup (autogroup
        // turned off with kernel.sched_autogroup_enabled=0 or noautogroup, as on some CI
        // machines): then there is nothing to raise.
        let Some(old) =
            parse_autogroup_nice(&cur).with_context(|| format!("unexpected {path}: {cur:?}"))?
        else {
            return Ok(AutogroupNice { old: None });
        };
        std::fs::write(path, nice.to_string())
            .with_context(|| format!("setting the autogroup nice to {nice}"))?;
        Ok(AutogroupNice { old: Some(old) })
    }

    /// [`AutogroupNice::set`] when `nice` is given; `None` leaves the autogroup alone.
    pub fn set_opt(nice: Option<i32>) -> Result<Option<AutogroupNice>> {
        nice.map(AutogroupNice::set).transpose()
    }
}

impl Drop for AutogroupNice {
    fn drop(&mut self) {
        if let Some(old) = self.old
            && let Err(e) = std::fs::write("/proc/self/autogroup", old.to_string())
        {
            eprintln!("warning: restoring the autogroup nice to {old}: {e}");
        }
    }
}

/// The nice value in a `/proc/<pid>/autogroup` line; `Ok(None)` when the file is empty
/// (the task is in no autogroup).
fn parse_autogroup_nice(s: &str) -> Option<Option<i32>> {
    if s.trim().is_empty() {
        return Some(None);
    }
    let mut f = s.split_whitespace();
    let (_group, word, value) = (f.next()?, f.next()?, f.next()?);
    if word != "nice" || f.next().is_some() {
        return None;
    }
    value.parse().ok().map(Some)
}

/// Number of online CPUs.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autogroup_line() {
        assert_eq!(
            parse_autogroup_nice("/autogroup-84 nice 0\n"),
            Some(Some(0))
        );
        assert_eq!(parse_autogroup_nice("/autogroup-3 nice -5"), Some(Some(-5)));
        assert_eq!(parse_autogroup_nice(""), Some(None));
        assert_eq!(parse_autogroup_nice("\n"), Some(None));
        assert_eq!(parse_autogroup_nice("/autogroup-3 weight 5"), None);
        assert_eq!(parse_autogroup_nice("/autogroup-3 nice x"), None);
    }

    #[test]
    fn proc_stat() {
        let s = "cpu  10 0 10 100 0 0 0 0 0 0\n\
                 cpu0 5 1 4 50 2 1 1 3 0 0\n\
                 cpu1 7 0 3 60 0 0 0 0 0 0\n\
                 intr 1 2 3\n";
        let t = parse_proc_stat(s).unwrap();
        assert_eq!(t.cpus.len(), 2);
        // cpu0: total 67, idle 50, iowait 2, steal 3 -> busy 12
        assert_eq!(t.cpus[0], (12, 67));
        assert_eq!(t.cpus[1], (10, 70));
        let later =
            parse_proc_stat("cpu0 105 1 4 50 2 1 1 3 0 0\ncpu1 7 0 3 160 0 0 0 0 0 0\n").unwrap();
        let hz = crate::sys::clock_ticks_per_sec();
        assert_eq!(
            later.busy_ns_since(&t, 0).unwrap(),
            100 * 1_000_000_000 / hz
        );
        assert_eq!(later.busy_ns_since(&t, 1).unwrap(), 0);
        assert!(later.busy_ns_since(&t, 2).is_err());
        assert!(parse_proc_stat("intr 1\n").is_err());
    }

    #[test]
    fn task_stat() {
        let s = "1234 (napi/veth a-81) S 2 0 0 0 -1 2129984 0 0 0 0 17 230 0 0 20 0 1 0 6 0 0";
        assert_eq!(parse_task_ticks(s).unwrap(), 247);
        assert!(parse_task_ticks("1234 (x) S 2").is_err());
    }

    #[test]
    fn reads_this_machine() {
        let t = CpuTimes::read().unwrap();
        assert!(!t.cpus.is_empty());
        assert!(task_cpu_ns(std::process::id() as i32).is_ok());
    }
}

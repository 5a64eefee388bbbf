//! Processes the lab starts (agents, test servers): spawn into a namespace, record, check,
//! stop. A recorded process is only ever signalled while `/proc/PID` still shows the same
//! start time and the command line the lab started, so a reused PID is never touched.

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns;

/// A process started by the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcRecord {
    pub pid: i32,
    /// `starttime` from `/proc/PID/stat` (clock ticks since boot).
    pub start_time: u64,
    /// The namespace it was started in.
    pub netns: String,
    /// The program's argv (what `/proc/PID/cmdline` shows once `ip netns exec` has exec'd).
    pub argv: Vec<String>,
    /// stdout and stderr.
    pub log: PathBuf,
}

/// What `/proc` says about a PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// The state letter (`R`, `S`, `Z`, …).
    pub state: char,
    pub start_time: u64,
    pub cmdline: Vec<String>,
}

/// Reads `/proc/PID/stat` and `/proc/PID/cmdline`; `None` when the PID does not exist.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    Some(ProcInfo {
        state,
        start_time,
        cmdline,
    })
}

impl ProcRecord {
    /// True when the PID is still the process the lab started: same start time, and a
    /// command line equal to the recorded argv (or to `ip netns exec NS argv…` in the short
    /// moment before `ip` execs).
    pub fn is_ours(&self, info: &ProcInfo) -> bool {
        if info.start_time != self.start_time {
            return false;
        }
        if info.cmdline == self.argv {
            return true;
        }
        let wrapped = info.cmdline.len() == self.argv.len() + 4
            && info.cmdline[1..4] == ["netns", "exec", self.netns.as_str()]
            && info.cmdline[4..] == self.argv[..];
        // A zombie has an empty command line: it is ours if the start time matches.
        wrapped || (info.state == 'Z' && info.cmdline.is_empty())
    }

    /// Running (not a zombie) and still ours.
    pub fn alive(&self) -> bool {
        match proc_info(self.pid) {
            Some(info) => info.state != 'Z' && info.state != 'X' && self.is_ours(&info),
            None => false,
        }
    }
}

/// Opens (creates, appends) a log file for a child's stdout and stderr.
fn open_log(log: &Path) -> Result<(File, File)> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    Ok((out, err))
}

/// Starts `argv` in the background inside `netns` (`ip netns exec`), in its own process
/// group, stdin from /dev/null, stdout and stderr appended to `log`.
pub fn spawn_in_netns(netns: &str, argv: &[String], log: &Path) -> Result<(Child, ProcRecord)> {
    if argv.is_empty() {
        bail!("nothing to run in {netns}");
    }
    let (out, err) = open_log(log)?;
    let child = Command::new(netns::ip_bin())
        .args(["netns", "exec", netns])
        .args(argv)
        // Logs are files: no terminal colours in them.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} in {netns}", argv.join(" ")))?;
    let pid = child.id() as i32;
    let start_time = proc_info(pid)
        .map(|i| i.start_time)
        .with_context(|| format!("process {pid} ({}) vanished at once", argv[0]))?;
    Ok((
        child,
        ProcRecord {
            pid,
            start_time,
            netns: netns.to_string(),
            argv: argv.to_vec(),
            log: log.to_path_buf(),
        },
    ))
}

/// Reaps `pid` if it is a zombie child of this process (tests run the lab in-process).
fn reap(pid: i32) {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// What [`stop_all`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// Recorded processes that had already exited (or whose PID now belongs to another).
    pub gone: usize,
    /// Ended by SIGTERM.
    pub terminated: usize,
    /// Needed SIGKILL.
    pub killed: usize,
}

/// Stops the recorded processes: SIGTERM to those still ours, wait up to `grace`, then
/// SIGKILL the rest and wait for them to go. Nothing else is signalled.
pub fn stop_all(recs: &[ProcRecord], grace: Duration) -> StopReport {
    let mut report = StopReport::default();
    let mut pending: Vec<&ProcRecord> = Vec::new();
    for r in recs {
        reap(r.pid);
        if r.alive() {
            match kill(Pid::from_raw(r.pid), Signal::SIGTERM) {
                Ok(()) => pending.push(r),
                Err(_) => report.gone += 1,
            }
        } else {
            report.gone += 1;
        }
    }
    let deadline = Instant::now() + grace;
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        pending.retain(|r| {
            reap(r.pid);
            let still = r.alive();
            if !still {
                report.terminated += 1;
            }
            still
        });
    }
    for r in &pending {
        if r.alive() && kill(Pid::from_raw(r.pid), Signal::SIGKILL).is_ok() {
            report.killed += 1;
        } else {
            report.terminated += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pending.iter().any(|r| {
        reap(r.pid);
        r.alive()
    }) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    report
}

/// The last `lines` lines of a log file (at most 64 KiB are read).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(log) else {
        return format!("(no log at {})", log.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_info_of_self() {
        let me = std::process::id() as i32;
        let info = proc_info(me).expect("own /proc entry");
        assert!(matches!(info.state, 'R' | 'S'), "{info:?}");
        assert!(info.start_time > 0);
        assert!(!info.cmdline.is_empty());
        assert!(proc_info(i32::MAX).is_none());
    }

    #[test]
    fn record_matching() {
        let rec = ProcRecord {
            pid: 1,
            start_time: 42,
            netns: "xl-server1".into(),
            argv: vec!["/bin/xdplane".into(), "run".into()],
            log: PathBuf::from("/dev/null"),
        };
        let mut info = ProcInfo {
            state: 'S',
            start_time: 42,
            cmdline: rec.argv.clone(),
        };
        assert!(rec.is_ours(&info));
        info.cmdline = ["ip", "netns", "exec", "xl-server1", "/bin/xdplane", "run"]
            .map(String::from)
            .to_vec();
        assert!(rec.is_ours(&info));
        info.cmdline[3] = "xl-server2".into();
        assert!(!rec.is_ours(&info), "other namespace");
        info.cmdline = vec!["/usr/bin/sleep".into(), "100".into()];
        assert!(!rec.is_ours(&info), "PID reused by another program");
        info.cmdline = rec.argv.clone();
        info.start_time = 43;
        assert!(!rec.is_ours(&info), "PID reused: other start time");
    }

    #[test]
    fn stop_only_our_process() {
        // A process started here (root namespace: `ip netns exec` is not needed for the
        // signalling logic) is stopped by SIGTERM; a record with a wrong start time is not.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        // Until the child has exec'd, /proc shows the test binary's command line.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let info = loop {
            let i = proc_info(pid).unwrap();
            if i.cmdline.first().is_some_and(|c| c.ends_with("sleep"))
                || std::time::Instant::now() > deadline
            {
                break i;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let wrong = ProcRecord {
            pid,
            start_time: info.start_time + 1,
            netns: String::new(),
            argv: info.cmdline.clone(),
            log: PathBuf::from("/dev/null"),
        };
        let rep = stop_all(std::slice::from_ref(&wrong), Duration::from_millis(200));
        assert_eq!(rep.gone, 1);
        assert!(proc_info(pid).is_some_and(|i| i.state != 'Z'), "left alone");

        let right = ProcRecord {
            start_time: info.start_time,
            ..wrong
        };
        assert!(right.alive());
        let rep = stop_all(std::slice::from_ref(&right), Duration::from_secs(2));
        assert_eq!(rep.terminated, 1, "{rep:?}");
        assert!(!right.alive());
        // Already reaped by stop_all.
        assert!(child.try_wait().is_err() || child.try_wait().unwrap().is_some());
    }

    #[test]
    fn tail_of_log() {
        let dir = std::env::temp_dir().join(format!("xdplane-lab-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.log");
        std::fs::write(&p, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&p, 2), "3\n4");
        assert_eq!(log_tail(&p, 10), "1\n2\n3\n4");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(log_tail(&p, 2).contains("no log"));
    }
}

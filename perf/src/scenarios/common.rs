//! What the scenarios share: their state directory, option checks, the measuring window of a
//! packets-per-second run, `/proc/net/dev` counters, the agents' threads and pod attachments.
use crate::agent::find_agent_bin;
use crate::cpu::{CpuTimes, task_cpu_ns};
use crate::generator::{Generator, Limit, Rate};
use crate::netns::fmt_mac;
use crate::report::{Machine, Stat};
use crate::sink::{Sink, SinkCounters};
use crate::sys;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdplane_api::Attachment;

/// `/run/xdplane-perf/<prefix>`: manifests, admin sockets, logs; removed on drop.
pub(crate) struct StateDir {
    pub(crate) path: PathBuf,
}

impl StateDir {
    pub(crate) fn create(prefix: &str) -> Result<StateDir> {
        let path = PathBuf::from("/run/xdplane-perf").join(prefix);
        if path.exists() {
            bail!(
                "{} exists (another run with prefix {prefix}?)",
                path.display()
            );
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(StateDir { path })
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        // The parent goes too when no other run uses it.
        let _ = std::fs::remove_dir("/run/xdplane-perf");
    }
}

/// The agent binary when an xdplane datapath is to run (`needed`), else `None`.
pub(crate) fn agent_bin_if(needed: bool, explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    Ok(if needed {
        Some(find_agent_bin(explicit)?)
    } else {
        None
    })
}

/// The checks every scenario starts with: two different CPUs of this machine, something to
/// run.
pub(crate) fn check_cpus_and_runs(
    gen_cpu: usize,
    fwd_cpu: usize,
    runs: usize,
    datapaths: usize,
) -> Result<()> {
    let n = crate::cpu::nproc();
    if gen_cpu == fwd_cpu {
        bail!("the generator and the forwarder need different CPUs (both are {gen_cpu})");
    }
    if gen_cpu >= n || fwd_cpu >= n {
        bail!("CPUs {gen_cpu} and {fwd_cpu} requested, this machine has {n}");
    }
    if runs == 0 || datapaths == 0 {
        bail!("nothing to run");
    }
    Ok(())
}

/// The checks every scenario ends with: a usable name prefix (`hint` says what one is), and
/// root.
pub(crate) fn check_prefix_and_root(scenario: &str, prefix: &str, hint: &str) -> Result<()> {
    if prefix.is_empty()
        || prefix.len() > 40
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("bad prefix {prefix:?}: {hint}");
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        bail!("the {scenario} scenario needs root (namespaces, BPF, XDP)");
    }
    Ok(())
}

/// [`Stat::of`] `v`, NaN for no values.
pub(crate) fn stat(v: &[f64]) -> Stat {
    Stat::of(v).unwrap_or(Stat {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        n: 0,
    })
}

/// The [`stat`] of `f` over `runs`.
pub(crate) fn stat_of<T>(runs: &[&T], f: impl Fn(&T) -> f64) -> Stat {
    stat(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
}

/// `runs` grouped by `key`, in key order, each group in the runs' order.
pub(crate) fn group_by<T, K: Ord>(runs: &[T], key: impl Fn(&T) -> K) -> BTreeMap<K, Vec<&T>> {
    let mut groups: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for r in runs {
        groups.entry(key(r)).or_default().push(r);
    }
    groups
}

/// Runs `round` for each of `setups` (a datapath, with what else a scenario varies) in each
/// of `runs` rounds, announcing each on stderr as `<scenario>: <label> round <i>/<runs> …`;
/// stops at the first failure, given back as `<label> round <i>: <error>`.
pub(crate) fn run_rounds<T>(
    scenario: &str,
    runs: usize,
    setups: &[T],
    label: impl Fn(&T) -> String,
    mut round: impl FnMut(&T, usize) -> Result<()>,
) -> Option<String> {
    for i in 1..=runs {
        for setup in setups {
            let l = label(setup);
            eprintln!("{scenario}: {l} round {i}/{runs} …");
            if let Err(e) = round(setup, i) {
                return Some(format!("{l} round {i}: {e:#}"));
            }
        }
    }
    None
}

/// The rate as reports write it: `max` or `<N> pps`.
pub(crate) fn rate_label(rate: Rate) -> String {
    match rate {
        Rate::Max => "max".into(),
        Rate::Pps(p) => format!("{p} pps"),
    }
}

/// A report table's first lines: `title`, then the `machine:` line.
pub(crate) fn table_head(title: &str, machine: &Machine) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    write_machine(&mut s, machine);
    s
}

/// The `machine:` line of a report's table.
fn write_machine(s: &mut String, machine: &Machine) {
    let _ = writeln!(
        s,
        "machine: {} CPUs, {}, kernel {}, load {}",
        machine.nproc, machine.cpu_model, machine.kernel, machine.loadavg
    );
}

/// The `background load …` line of a report's table (see [`background`]).
pub(crate) fn write_background(s: &mut String, gen_cpu: usize, fwd_cpu: usize, busy: [f64; 2]) {
    let _ = writeln!(
        s,
        "background load before the runs: CPU{} {:.1} %, CPU{} {:.1} %",
        gen_cpu,
        busy[0] * 100.0,
        fwd_cpu,
        busy[1] * 100.0
    );
}

/// Busy share of the two CPUs over one second with no traffic.
pub(crate) fn background(gen_cpu: usize, fwd_cpu: usize) -> Result<[f64; 2]> {
    let c0 = CpuTimes::read()?;
    let t0 = Instant::now();
    sleep_checked(Duration::from_secs(1))?;
    let c1 = CpuTimes::read()?;
    let ns = t0.elapsed().as_nanos() as f64;
    Ok([
        c1.busy_ns_since(&c0, gen_cpu)? as f64 / ns,
        c1.busy_ns_since(&c0, fwd_cpu)? as f64 / ns,
    ])
}

/// Sleeps, returning early with an error on SIGINT/SIGTERM.
pub(crate) fn sleep_checked(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if sys::stop_requested() {
            bail!("interrupted");
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Counters at one instant; `path` holds the scenario's own (veth counters).
pub(crate) struct Snap<P> {
    pub(crate) t: Instant,
    pub(crate) sink: SinkCounters,
    pub(crate) sent: u64,
    pub(crate) path: P,
    pub(crate) cpu: CpuTimes,
    pub(crate) task_ns: u64,
}

impl<P> Snap<P> {
    pub(crate) fn take(
        sink: &Sink,
        generator: &Generator,
        tasks: &[i32],
        path: impl FnOnce() -> Result<P>,
    ) -> Result<Snap<P>> {
        // The counters the rates come from first, as close to `t` as possible.
        let t = Instant::now();
        let sent = generator.sent()?;
        let sink = sink.counters()?;
        let path = path()?;
        let cpu = CpuTimes::read()?;
        let mut task_ns = 0;
        for &p in tasks {
            task_ns += task_cpu_ns(p)?;
        }
        Ok(Snap {
            t,
            sink,
            sent,
            path,
            cpu,
            task_ns,
        })
    }
}

impl<P> Snap<P> {
    /// From `earlier` to this snapshot: busy ns of `gen_cpu`, busy ns of `fwd_cpu`, CPU ns
    /// of the tasks.
    pub(crate) fn cpu_since(
        &self,
        earlier: &Snap<P>,
        gen_cpu: usize,
        fwd_cpu: usize,
    ) -> Result<(f64, f64, f64)> {
        Ok((
            self.cpu.busy_ns_since(&earlier.cpu, gen_cpu)? as f64,
            self.cpu.busy_ns_since(&earlier.cpu, fwd_cpu)? as f64,
            self.task_ns.saturating_sub(earlier.task_ns) as f64,
        ))
    }
}

/// Runs the generator without limit at `rate`: `warmup`, then the snapshots at the start
/// and at the end of `window`.
pub(crate) fn measure_window<P>(
    generator: &mut Generator,
    rate: Rate,
    warmup: Duration,
    window: Duration,
    sink: &Sink,
    tasks: &[i32],
    path: impl Fn() -> Result<P>,
) -> Result<(Snap<P>, Snap<P>)> {
    let running = generator.start(Limit::Unlimited, rate)?;
    sleep_checked(warmup)?;
    if running.is_finished() {
        running.stop()?;
        bail!("the generator stopped during the warm-up");
    }
    let a = Snap::take(sink, generator, tasks, &path)?;
    sleep_checked(window)?;
    let b = Snap::take(sink, generator, tasks, &path)?;
    running.stop()?;
    Ok((a, b))
}

/// `/proc/thread-self/net/dev` opened by a thread inside `ns`: the open file stays bound to
/// that namespace, and each read from offset 0 is fresh.
pub(crate) fn open_net_dev(ns: &crate::netns::Netns, what: &'static str) -> Result<File> {
    ns.run_in(|| File::open("/proc/thread-self/net/dev").context(what))
}

/// The whole table of a file from [`open_net_dev`], read afresh.
pub(crate) fn read_net_dev(mut f: &File) -> Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut table = String::new();
    f.read_to_string(&mut table)?;
    Ok(table)
}

/// One device's line of /proc/net/dev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DevStats {
    pub(crate) rx_packets: u64,
    pub(crate) rx_dropped: u64,
    pub(crate) tx_dropped: u64,
}

/// The counters of `ifname` in a `/proc/net/dev` table.
pub(crate) fn parse_net_dev(table: &str, ifname: &str) -> Result<DevStats> {
    for line in table.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != ifname {
            continue;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast | tx: bytes packets
        // errs drop …
        let f: Vec<u64> = rest
            .split_ascii_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad /proc/net/dev line {line:?}"))?;
        if f.len() < 12 {
            bail!("short /proc/net/dev line {line:?}");
        }
        return Ok(DevStats {
            rx_packets: f[1],
            rx_dropped: f[3],
            tx_dropped: f[11],
        });
    }
    bail!("{ifname} not in /proc/net/dev")
}

/// The thread ids of process `pid`.
pub(crate) fn threads_of(pid: i32) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("threads of {pid}"))?
    {
        if let Some(t) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Gives every thread of the agent `pid` the nice value `n`.
pub(crate) fn nice_agent_threads(pid: i32, n: i32) -> Result<()> {
    for tid in threads_of(pid)? {
        match sys::set_nice(tid, n) {
            // A thread that ended in between (the agent runs one per admin connection);
            // threads started later inherit the nice value of the thread that starts them.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            r => r.with_context(|| format!("nice {n} on agent thread {tid}"))?,
        }
    }
    Ok(())
}

/// The attachment of bench pod `name` (`pod-a`, `pod-b`) on host veth `ifname`.
pub(crate) fn bench_attachment(name: &str, ifname: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Attachment {
    Attachment {
        container_id: format!("bench-{name}"),
        pod_namespace: "bench".into(),
        pod_name: name.into(),
        ifname: ifname.into(),
        ip: ip.to_string(),
        mac: fmt_mac(&mac),
    }
}

/// Panics unless `json` holds every one of `keys` (as object keys), in that order.
#[cfg(test)]
pub(crate) fn assert_key_order(json: &str, keys: &[&str]) {
    let mut at = 0;
    for k in keys {
        let quoted = format!("\"{k}\":");
        let Some(i) = json[at..].find(&quoted) else {
            panic!("{k} missing or out of order in {json}");
        };
        at += i + quoted.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_table() {
        let t = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n \
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n \
 vetha: 6000000  100000    0  250    0     0          0         0     1000      10    0    7    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(t, "vetha").unwrap(),
            DevStats {
                rx_packets: 100_000,
                rx_dropped: 250,
                tx_dropped: 7,
            }
        );
        assert!(parse_net_dev(t, "vethb").is_err());
        assert!(parse_net_dev(" x: 1 2 3 4\n", "x").is_err(), "short line");
        assert!(parse_net_dev(" x: 1 two 3\n", "x").is_err(), "bad number");
    }

    #[test]
    fn rounds_alternate_and_stop_at_the_first_failure() {
        let mut seen = Vec::new();
        let error = run_rounds(
            "t",
            3,
            &["a", "b"],
            |s| format!("{s} x,"),
            |&s, i| {
                seen.push(format!("{s}{i}"));
                if (s, i) == ("b", 2) {
                    bail!("boom")
                }
                Ok(())
            },
        );
        assert_eq!(seen, ["a1", "b1", "a2", "b2"]);
        assert_eq!(error.as_deref(), Some("b x, round 2: boom"));
        assert_eq!(
            run_rounds("t", 2, &[1], |_| "one".into(), |_, _| Ok(())),
            None
        );
    }

    #[test]
    fn rate_labels() {
        assert_eq!(rate_label(Rate::Max), "max");
        assert_eq!(rate_label(Rate::Pps(500_000)), "500000 pps");
    }

    #[test]
    fn attachments_of_bench_pods() {
        let a = bench_attachment(
            "pod-a",
            "vetha",
            Ipv4Addr::new(10, 244, 1, 2),
            [2, 0, 0, 0, 0, 1],
        );
        assert_eq!(a.container_id, "bench-pod-a");
        assert_eq!(a.pod_namespace, "bench");
        assert_eq!(a.pod_name, "pod-a");
        assert_eq!(a.ip, "10.244.1.2");
        assert_eq!(a.mac, "02:00:00:00:00:01");
    }
}

//! The traffic sink: the XDP program `bpf/xdpsink.c` attached (native mode) to the receiving
//! interface. It counts every frame, and separately the generator's frames that pass its
//! filter (destination MAC, IPv4 and UDP port), in per-CPU counters, and drops everything.
//! For matched frames it also counts reordering (a sequence number not above the last one
//! seen on that CPU) and sums the one-way latency from the generator's timestamp.
//!
//! Loss is what the generator sent minus what the sink matched: frames that arrive with a
//! wrong destination are not matched, so they show up as missing.
use crate::netns::in_netns;
use anyhow::{Context, Result};
use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use std::net::Ipv4Addr;
use std::path::Path;

static XDPSINK_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdpsink.o"));

const FILTER_MAC: u32 = 1;
const FILTER_IP: u32 = 2;
const FILTER_PORT: u32 = 4;

/// `struct sink_config` of `bpf/common.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawConfig {
    mac: [u8; 6],
    dst_port: u16,
    ip: [u8; 4],
    flags: u32,
}

/// `struct sink_counters` of `bpf/common.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawCounters {
    packets: u64,
    bytes: u64,
    matched: u64,
    matched_bytes: u64,
    reordered: u64,
    lat_sum_ns: u64,
    lat_max_ns: u64,
    last_seq_plus1: u64,
}

// SAFETY: #[repr(C)] structs of integers and byte arrays without implicit padding: every bit
// pattern is valid.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawConfig {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawCounters {}

/// Which frames count as "matched" (generator frames addressed to this sink). `None` fields
/// are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkFilter {
    pub mac: Option<[u8; 6]>,
    pub ip: Option<Ipv4Addr>,
    pub dst_port: Option<u16>,
}

/// Counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkCounters {
    /// Every frame the program saw.
    pub packets: u64,
    pub bytes: u64,
    /// IPv4/UDP frames with a generator payload that pass the filter.
    pub matched: u64,
    pub matched_bytes: u64,
    /// Matched frames whose sequence number was not above the last one seen on their CPU.
    pub reordered: u64,
    /// Sum of (arrival − generator timestamp) over matched frames.
    pub lat_sum_ns: u64,
    /// Largest latency since the sink was attached (not a windowed value).
    pub lat_max_ns: u64,
}

impl SinkCounters {
    /// The counts accumulated since `earlier` (`lat_max_ns` stays the all-time maximum).
    pub fn since(&self, earlier: &SinkCounters) -> SinkCounters {
        SinkCounters {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            matched: self.matched.saturating_sub(earlier.matched),
            matched_bytes: self.matched_bytes.saturating_sub(earlier.matched_bytes),
            reordered: self.reordered.saturating_sub(earlier.reordered),
            lat_sum_ns: self.lat_sum_ns.saturating_sub(earlier.lat_sum_ns),
            lat_max_ns: self.lat_max_ns,
        }
    }

    /// Mean one-way latency of matched frames, if any.
    pub fn mean_latency_ns(&self) -> Option<f64> {
        (self.matched > 0).then(|| self.lat_sum_ns as f64 / self.matched as f64)
    }
}

/// The sink program attached to one interface; detached when dropped.
pub struct Sink {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, RawCounters>,
}

impl Sink {
    /// Loads the sink program and attaches it in native (driver) mode to `ifname` in the
    /// namespace at `netns` (`None`: the caller's). On a veth this also gives the device the
    /// NAPI instance that frames redirected by its peer need.
    pub fn attach(netns: Option<&Path>, ifname: &str, filter: SinkFilter) -> Result<Sink> {
        let mut ebpf = Ebpf::load(XDPSINK_OBJ).context("loading the sink XDP program")?;
        write_filter(&mut ebpf, filter)?;
        {
            let prog: &mut Xdp = ebpf
                .program_mut("xdpsink")
                .context("program xdpsink missing from xdpsink.o")?
                .try_into()
                .context("xdpsink is not an XDP program")?;
            prog.load().context("loading xdpsink into the kernel")?;
            in_netns(netns, || {
                prog.attach(ifname, XdpMode::Driver)
                    .with_context(|| format!("attaching the sink to {ifname} (native mode)"))
            })?;
        }
        let counters = ebpf
            .take_map("sink_counters")
            .context("map sink_counters missing")?;
        let counters = PerCpuArray::try_from(counters).context("map sink_counters")?;
        Ok(Sink { ebpf, counters })
    }

    /// Replaces the filter (takes effect on the next frame).
    pub fn set_filter(&mut self, filter: SinkFilter) -> Result<()> {
        write_filter(&mut self.ebpf, filter)
    }

    /// The counters since the program was attached, summed over CPUs.
    pub fn counters(&self) -> Result<SinkCounters> {
        let v = self.counters.get(&0, 0).context("reading sink_counters")?;
        let mut c = SinkCounters::default();
        for k in v.iter() {
            c.packets += k.packets;
            c.bytes += k.bytes;
            c.matched += k.matched;
            c.matched_bytes += k.matched_bytes;
            c.reordered += k.reordered;
            c.lat_sum_ns += k.lat_sum_ns;
            c.lat_max_ns = c.lat_max_ns.max(k.lat_max_ns);
        }
        Ok(c)
    }
}

fn write_filter(ebpf: &mut Ebpf, f: SinkFilter) -> Result<()> {
    let mut raw = RawConfig::default();
    if let Some(mac) = f.mac {
        raw.mac = mac;
        raw.flags |= FILTER_MAC;
    }
    if let Some(ip) = f.ip {
        raw.ip = ip.octets();
        raw.flags |= FILTER_IP;
    }
    if let Some(p) = f.dst_port {
        raw.dst_port = p;
        raw.flags |= FILTER_PORT;
    }
    let map = ebpf
        .map_mut("sink_config")
        .context("map sink_config missing")?;
    let mut arr: Array<&mut MapData, RawConfig> =
        Array::try_from(map).context("map sink_config")?;
    arr.set(0, raw, 0).context("writing sink_config")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_common_h() {
        assert_eq!(std::mem::size_of::<RawConfig>(), 16);
        assert_eq!(std::mem::offset_of!(RawConfig, ip), 8);
        assert_eq!(std::mem::offset_of!(RawConfig, flags), 12);
        assert_eq!(std::mem::size_of::<RawCounters>(), 64);
    }

    #[test]
    fn since_subtracts_and_keeps_max() {
        let a = SinkCounters {
            packets: 10,
            bytes: 600,
            matched: 8,
            matched_bytes: 480,
            reordered: 1,
            lat_sum_ns: 800,
            lat_max_ns: 200,
        };
        let b = SinkCounters {
            packets: 30,
            bytes: 1800,
            matched: 28,
            matched_bytes: 1680,
            reordered: 1,
            lat_sum_ns: 2800,
            lat_max_ns: 300,
        };
        let d = b.since(&a);
        assert_eq!(d.packets, 20);
        assert_eq!(d.matched, 20);
        assert_eq!(d.reordered, 0);
        assert_eq!(d.lat_max_ns, 300);
        assert_eq!(d.mean_latency_ns(), Some(100.0));
        assert_eq!(SinkCounters::default().mean_latency_ns(), None);
    }
}

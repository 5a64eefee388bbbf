//! The XDP program `bpf/xdplane_redirect.c`: loading (aya), attaching as bpf_links, and
//! the map handles the worker and the control side use.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use aya::maps::Map;
use aya::programs::Xdp;

use crate::sys;

/// The compiled program (clang, in build.rs).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdplane_redirect.o"));
const PROGRAM: &str = "xdplane_redirect";

/// Entries of the `xsks` XSKMAP (slots are 0..XSK_SLOTS).
pub const XSK_SLOTS: u32 = 1024;
/// `port_policy` flag: redirect every frame of the port's bound queues (pod ports).
pub const PORT_REDIRECT_ALL: u32 = 1;
/// `port_policy` flag: redirect only IPv4 frames to an owned prefix (uplinks).
pub const PORT_REDIRECT_OWNED: u32 = 2;
const PORT_FLAGS: u32 = PORT_REDIRECT_ALL | PORT_REDIRECT_OWNED;

// bpf(2) commands and the XDP attach type (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const BPF_ANY: u64 = 0;
// XDP attach flags (include/uapi/linux/if_link.h).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// How to attach the program to a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (SKB) mode; logged.
    #[default]
    Auto,
    Native,
    Generic,
}

/// The mode an attachment got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("loading the XDP program into the kernel: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    #[error("attaching XDP to ifindex {ifindex} ({mode:?}): {source}")]
    Attach {
        ifindex: u32,
        mode: AttachedMode,
        source: io::Error,
    },
    #[error("ifindex {0} already has the program attached by this process")]
    AlreadyAttached(u32),
    #[error("{map} {op}: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        source: io::Error,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The loaded program. Attachments are bpf_links owned by this value: they are detached
/// by [`detach`](Self::detach), when this value is dropped, and by the kernel when the
/// process exits (nothing stays attached behind us).
pub struct XdpProgram {
    // Links first: detached before the program and maps are released.
    links: HashMap<u32, (OwnedFd, AttachedMode)>,
    prog_fd: OwnedFd,
    maps: XdpMaps,
    _ebpf: aya::Ebpf,
}

impl XdpProgram {
    /// Loads the embedded object (maps created, program verified).
    pub fn load() -> Result<XdpProgram, BpfError> {
        let mut ebpf = aya::Ebpf::load(OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(BpfError::Missing("program xdplane_redirect"))?
            .try_into()?;
        prog.load()?;
        let prog_fd = prog.fd()?.as_fd().try_clone_to_owned()?;

        let map_fd = |name: &'static str| -> Result<OwnedFd, BpfError> {
            let data = match ebpf.map(name) {
                Some(Map::XskMap(d))
                | Some(Map::HashMap(d))
                | Some(Map::LpmTrie(d))
                | Some(Map::Array(d)) => d,
                _ => return Err(BpfError::Missing(name)),
            };
            Ok(data.fd().as_fd().try_clone_to_owned()?)
        };
        let maps = XdpMaps {
            fds: Arc::new(MapFds {
                xsks: map_fd("xsks")?,
                xsk_slots: map_fd("xsk_slots")?,
                port_policy: map_fd("port_policy")?,
                owned_prefixes: map_fd("owned_prefixes")?,
                owned_services: map_fd("owned_services")?,
                nat_config: map_fd("nat_config")?,
            }),
        };
        tracing::info!("XDP program loaded");
        Ok(XdpProgram {
            links: HashMap::new(),
            prog_fd,
            maps,
            _ebpf: ebpf,
        })
    }

    /// A handle to the program's maps (cheap to clone, `Send + Sync`).
    pub fn maps(&self) -> XdpMaps {
        self.maps.clone()
    }

    /// Attaches the program to `ifindex` as a bpf_link. `Auto` tries native mode, then
    /// generic mode.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<AttachedMode, BpfError> {
        if self.links.contains_key(&ifindex) {
            return Err(BpfError::AlreadyAttached(ifindex));
        }
        let (fd, got) = match mode {
            XdpMode::Native => (
                self.link(ifindex, AttachedMode::Native)?,
                AttachedMode::Native,
            ),
            XdpMode::Generic => (
                self.link(ifindex, AttachedMode::Generic)?,
                AttachedMode::Generic,
            ),
            XdpMode::Auto => match self.link(ifindex, AttachedMode::Native) {
                Ok(fd) => (fd, AttachedMode::Native),
                Err(native) => {
                    let fd = self.link(ifindex, AttachedMode::Generic)?;
                    tracing::info!(ifindex, error = %native, "native XDP refused; attached in generic (SKB) mode");
                    (fd, AttachedMode::Generic)
                }
            },
        };
        tracing::info!(ifindex, mode = ?got, "XDP program attached");
        self.links.insert(ifindex, (fd, got));
        Ok(got)
    }

    fn link(&self, ifindex: u32, mode: AttachedMode) -> Result<OwnedFd, BpfError> {
        #[repr(C)]
        struct LinkCreate {
            prog_fd: u32,
            target_ifindex: u32,
            attach_type: u32,
            flags: u32,
        }
        let mut attr = LinkCreate {
            prog_fd: self.prog_fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: match mode {
                AttachedMode::Native => XDP_FLAGS_DRV_MODE,
                AttachedMode::Generic => XDP_FLAGS_SKB_MODE,
            },
        };
        let fd = sys::bpf(BPF_LINK_CREATE, &mut attr).map_err(|source| BpfError::Attach {
            ifindex,
            mode,
            source,
        })?;
        Ok(sys::owned_fd(fd))
    }

    /// Detaches from `ifindex`; returns whether it was attached (by this value).
    pub fn detach(&mut self, ifindex: u32) -> bool {
        // Closing the only descriptor of the link detaches it.
        let was = self.links.remove(&ifindex).is_some();
        if was {
            tracing::info!(ifindex, "XDP program detached");
        }
        was
    }

    /// The mode of the attachment to `ifindex`, if attached by this value.
    pub fn attached(&self, ifindex: u32) -> Option<AttachedMode> {
        self.links.get(&ifindex).map(|(_, m)| *m)
    }
}

struct MapFds {
    xsks: OwnedFd,
    xsk_slots: OwnedFd,
    port_policy: OwnedFd,
    owned_prefixes: OwnedFd,
    owned_services: OwnedFd,
    nat_config: OwnedFd,
}

/// The uplink's source NAT as the XDP program sees it (the `nat_config` map): replies to
/// `node_ip` whose destination port (TCP/UDP/SCTP) or echo identifier (ICMP echo reply) is
/// in `ports`, and ICMP errors about packets the node IP sent from such a port, are
/// redirected to the dataplane on `REDIRECT_OWNED` ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    pub node_ip: Ipv4Addr,
    /// Inclusive range; `lo <= hi`.
    pub ports: (u16, u16),
}

/// `nat_config` flag: the entry is in force.
const NAT_ENABLED: u32 = 1;

/// `struct nat_config` of the program.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NatConfigValue {
    node_ip: [u8; 4],
    port_lo: u16,
    port_hi: u16,
    flags: u32,
}

/// Handles on the program's maps: duplicated descriptors and raw `bpf()` calls, so it
/// can be cloned into the worker and control threads and outlive the aya objects.
#[derive(Clone)]
pub struct XdpMaps {
    fds: Arc<MapFds>,
}

#[repr(C)]
struct SlotKey {
    ifindex: u32,
    queue: u32,
}

#[repr(C)]
struct Ipv4LpmKey {
    prefixlen: u32,
    addr: [u8; 4],
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn update<K, V>(map: &'static str, fd: &OwnedFd, key: &K, value: &V) -> Result<(), BpfError> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags: BPF_ANY,
    };
    sys::bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|source| BpfError::Map {
        map,
        op: "update",
        source,
    })?;
    Ok(())
}

/// Deletes `key`; Ok(false) if it was not there.
fn delete<K>(map: &'static str, fd: &OwnedFd, key: &K) -> Result<bool, BpfError> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: 0,
        flags: 0,
    };
    match sys::bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(source) => Err(BpfError::Map {
            map,
            op: "delete",
            source,
        }),
    }
}

/// Looks `key` up into a u32 value; Ok(None) if absent.
fn lookup_u32<K>(map: &'static str, fd: &OwnedFd, key: &K) -> Result<Option<u32>, BpfError> {
    let mut value = 0u32;
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: &mut value as *mut u32 as u64,
        flags: 0,
    };
    match sys::bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(source) => Err(BpfError::Map {
            map,
            op: "lookup",
            source,
        }),
    }
}

fn lpm_key(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4LpmKey, BpfError> {
    if prefix_len > 32 {
        return Err(BpfError::Invalid(format!(
            "prefix length {prefix_len} > 32"
        )));
    }
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len)
    };
    Ok(Ipv4LpmKey {
        prefixlen: prefix_len as u32,
        addr: (u32::from(addr) & mask).to_be_bytes(),
    })
}

impl XdpMaps {
    /// Sets the port's policy: [`PORT_REDIRECT_ALL`] or [`PORT_REDIRECT_OWNED`].
    pub fn set_port_policy(&self, ifindex: u32, flags: u32) -> Result<(), BpfError> {
        if flags == 0 || flags & !PORT_FLAGS != 0 {
            return Err(BpfError::Invalid(format!("port policy flags {flags:#x}")));
        }
        update("port_policy", &self.fds.port_policy, &ifindex, &flags)
    }

    /// Removes the port's policy (its frames pass to the kernel); whether it had one.
    pub fn clear_port_policy(&self, ifindex: u32) -> Result<bool, BpfError> {
        delete("port_policy", &self.fds.port_policy, &ifindex)
    }

    /// The port's policy flags, if set.
    pub fn port_policy(&self, ifindex: u32) -> Result<Option<u32>, BpfError> {
        lookup_u32("port_policy", &self.fds.port_policy, &ifindex)
    }

    /// Steers `(ifindex, queue)` to the socket `xsk_fd` through XSKMAP slot `slot`: the
    /// XSKMAP entry first, then the slot hash, so the program never sees a slot without
    /// a socket. The socket must be bound to that same (ifindex, queue).
    pub fn set_slot(
        &self,
        ifindex: u32,
        queue: u32,
        slot: u32,
        xsk_fd: BorrowedFd<'_>,
    ) -> Result<(), BpfError> {
        if slot >= XSK_SLOTS {
            return Err(BpfError::Invalid(format!("slot {slot} >= {XSK_SLOTS}")));
        }
        let fd = xsk_fd.as_raw_fd() as u32;
        update("xsks", &self.fds.xsks, &slot, &fd)?;
        update(
            "xsk_slots",
            &self.fds.xsk_slots,
            &SlotKey { ifindex, queue },
            &slot,
        )
    }

    /// Stops steering `(ifindex, queue)`: the slot hash entry first, then the XSKMAP
    /// entry. Missing entries are not an error.
    pub fn clear_slot(&self, ifindex: u32, queue: u32, slot: u32) -> Result<(), BpfError> {
        if slot >= XSK_SLOTS {
            return Err(BpfError::Invalid(format!("slot {slot} >= {XSK_SLOTS}")));
        }
        delete(
            "xsk_slots",
            &self.fds.xsk_slots,
            &SlotKey { ifindex, queue },
        )?;
        delete("xsks", &self.fds.xsks, &slot)?;
        Ok(())
    }

    /// The slot `(ifindex, queue)` is steered to, if any.
    pub fn slot(&self, ifindex: u32, queue: u32) -> Result<Option<u32>, BpfError> {
        lookup_u32(
            "xsk_slots",
            &self.fds.xsk_slots,
            &SlotKey { ifindex, queue },
        )
    }

    /// Adds an IPv4 destination prefix the dataplane owns on uplinks (host bits are
    /// cleared).
    pub fn add_owned_prefix(&self, addr: Ipv4Addr, prefix_len: u8) -> Result<(), BpfError> {
        let key = lpm_key(addr, prefix_len)?;
        update("owned_prefixes", &self.fds.owned_prefixes, &key, &1u32)
    }

    /// Removes an owned prefix; whether it was there.
    pub fn remove_owned_prefix(&self, addr: Ipv4Addr, prefix_len: u8) -> Result<bool, BpfError> {
        let key = lpm_key(addr, prefix_len)?;
        delete("owned_prefixes", &self.fds.owned_prefixes, &key)
    }

    /// Owns a service on one of the node's addresses (VXLAN: UDP to node IP:8472; NodePorts,
    /// externalIPs, LoadBalancer IPs; TCP, UDP or SCTP): uplink frames to it are redirected
    /// even though the address itself belongs to the kernel, and so are ICMP errors about
    /// packets sent from it.
    pub fn add_owned_service(&self, addr: Ipv4Addr, proto: u8, port: u16) -> Result<(), BpfError> {
        update(
            "owned_services",
            &self.fds.owned_services,
            &service_key(addr, proto, port)?,
            &1u32,
        )
    }

    /// Gives a service back to the kernel; whether it was owned.
    pub fn remove_owned_service(
        &self,
        addr: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Result<bool, BpfError> {
        delete(
            "owned_services",
            &self.fds.owned_services,
            &service_key(addr, proto, port)?,
        )
    }

    /// Whether the service is owned.
    pub fn is_owned_service(&self, addr: Ipv4Addr, proto: u8, port: u16) -> Result<bool, BpfError> {
        Ok(lookup_u32(
            "owned_services",
            &self.fds.owned_services,
            &service_key(addr, proto, port)?,
        )?
        .is_some())
    }

    /// Sets (Some) or disables (None) the source-NAT reply redirection of uplinks.
    pub fn set_nat_config(&self, cfg: Option<NatConfig>) -> Result<(), BpfError> {
        let value = match cfg {
            Some(c) => {
                if c.ports.0 > c.ports.1 || c.ports.0 == 0 {
                    return Err(BpfError::Invalid(format!(
                        "SNAT port range {}-{}",
                        c.ports.0, c.ports.1
                    )));
                }
                if c.node_ip.is_unspecified() {
                    return Err(BpfError::Invalid("SNAT node IP 0.0.0.0".into()));
                }
                NatConfigValue {
                    node_ip: c.node_ip.octets(),
                    port_lo: c.ports.0,
                    port_hi: c.ports.1,
                    flags: NAT_ENABLED,
                }
            }
            None => NatConfigValue::default(),
        };
        update("nat_config", &self.fds.nat_config, &0u32, &value)
    }

    /// The source-NAT configuration in force, if enabled.
    pub fn nat_config(&self) -> Result<Option<NatConfig>, BpfError> {
        let mut value = NatConfigValue::default();
        let key = 0u32;
        let mut attr = MapElemAttr {
            map_fd: self.fds.nat_config.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &mut value as *mut NatConfigValue as u64,
            flags: 0,
        };
        sys::bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map_err(|source| BpfError::Map {
            map: "nat_config",
            op: "lookup",
            source,
        })?;
        Ok((value.flags & NAT_ENABLED != 0).then(|| NatConfig {
            node_ip: Ipv4Addr::from(value.node_ip),
            ports: (value.port_lo, value.port_hi),
        }))
    }

    /// Whether `addr` falls in an owned prefix (longest-prefix lookup, as the program does).
    pub fn is_owned(&self, addr: Ipv4Addr) -> Result<bool, BpfError> {
        let key = lpm_key(addr, 32)?;
        Ok(lookup_u32("owned_prefixes", &self.fds.owned_prefixes, &key)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_keys_clear_host_bits() {
        let k = lpm_key(Ipv4Addr::new(10, 1, 2, 3), 16).unwrap();
        assert_eq!((k.prefixlen, k.addr), (16, [10, 1, 0, 0]));
        let k = lpm_key(Ipv4Addr::new(10, 1, 2, 3), 0).unwrap();
        assert_eq!(k.addr, [0, 0, 0, 0]);
        let k = lpm_key(Ipv4Addr::new(10, 1, 2, 3), 32).unwrap();
        assert_eq!(k.addr, [10, 1, 2, 3]);
        assert!(lpm_key(Ipv4Addr::LOCALHOST, 33).is_err());
    }

    #[test]
    fn object_is_embedded() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
    }
}

/// `struct service_key` of the program: address and port in network byte order.
#[repr(C)]
#[derive(Clone, Copy)]
struct ServiceKey {
    daddr: [u8; 4],
    dport: [u8; 2],
    proto: u8,
    pad: u8,
}

fn service_key(addr: Ipv4Addr, proto: u8, port: u16) -> Result<ServiceKey, BpfError> {
    if proto != libc::IPPROTO_UDP as u8
        && proto != libc::IPPROTO_TCP as u8
        && proto != libc::IPPROTO_SCTP as u8
    {
        return Err(BpfError::Invalid(format!(
            "owned service protocol {proto} (TCP, UDP or SCTP only)"
        )));
    }
    Ok(ServiceKey {
        daddr: addr.octets(),
        dport: port.to_be_bytes(),
        proto,
        pad: 0,
    })
}

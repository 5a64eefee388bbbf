//! Small device helpers. `ifindex_of` and `mac_of` ask the kernel through a socket, so
//! they answer for the calling thread's network namespace; `rx_queue_count` reads
//! sysfs, which shows the namespace it was mounted in, and checks that it matches.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} contains NUL"),
        )
    })
}

/// The interface index of `name` in the calling thread's network namespace.
pub fn ifindex_of(name: &str) -> io::Result<u32> {
    let c = c_name(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("no interface {name:?}: {e}"),
        ));
    }
    Ok(idx)
}

/// The Ethernet address of `name` (SIOCGIFHWADDR).
pub fn mac_of(name: &str) -> io::Result<[u8; 6]> {
    let c = c_name(name)?;
    // SAFETY: a new datagram socket used only for the ioctl; we own the descriptor.
    let sock = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(c.as_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifru_hwaddr inside `req`.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("SIOCGIFHWADDR {name:?}: {e}"),
        ));
    }
    // SAFETY: the kernel filled the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name:?} is not an Ethernet device (hardware type {})",
                sa.sa_family
            ),
        ));
    }
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// The number of receive queues of `name` (entries `rx-N` of
/// `/sys/class/net/NAME/queues`). Fails when the sysfs mounted at /sys belongs to
/// another network namespace than the calling thread's (its ifindex does not match).
pub fn rx_queue_count(name: &str) -> io::Result<u32> {
    c_name(name)?;
    let idx = ifindex_of(name)?;
    let dir = format!("/sys/class/net/{name}");
    let sys_idx = std::fs::read_to_string(format!("{dir}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if sys_idx != Some(idx) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{dir} does not describe ifindex {idx} of this network namespace \
                 (sysfs is mounted from another namespace)"
            ),
        ));
    }
    let mut n = 0;
    for e in std::fs::read_dir(format!("{dir}/queues"))? {
        if e?.file_name().to_string_lossy().starts_with("rx-") {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists() {
        assert_eq!(ifindex_of("lo").unwrap(), 1);
        assert!(ifindex_of("no-such-dev0").is_err());
        assert!(ifindex_of("").is_err());
        assert!(ifindex_of("a-name-longer-than-ifnamsiz").is_err());
        // lo is not Ethernet
        assert!(mac_of("lo").is_err());
        assert_eq!(rx_queue_count("lo").unwrap(), 1);
    }
}

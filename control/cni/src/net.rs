//! IPv4 addresses with a prefix length ("10.244.1.5/24").

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with a prefix length. The address keeps its host bits: `10.244.1.5/24`
/// is an interface address, `10.244.1.0/24` a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        (prefix <= 32).then_some(Ipv4Net { addr, prefix })
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// This prefix with the host bits cleared.
    pub fn trunc(&self) -> Ipv4Net {
        Ipv4Net {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a string is not an `a.b.c.d/n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNetError(pub String);

impl fmt::Display for ParseNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an IPv4 address with a prefix length",
            self.0
        )
    }
}

impl std::error::Error for ParseNetError {}

impl FromStr for Ipv4Net {
    type Err = ParseNetError;
    fn from_str(s: &str) -> Result<Ipv4Net, ParseNetError> {
        let err = || ParseNetError(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| err())?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let prefix: u8 = p.parse().map_err(|_| err())?;
        Ipv4Net::new(addr, prefix).ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let n: Ipv4Net = "10.244.1.5/24".parse().unwrap();
        assert_eq!(n.addr, Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(n.prefix, 24);
        assert_eq!(n.network(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(n.trunc().to_string(), "10.244.1.0/24");
        assert!(n.contains(Ipv4Addr::new(10, 244, 1, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 244, 2, 1)));
        let d: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(d.is_default() && d.contains(Ipv4Addr::new(8, 8, 8, 8)));
        let h: Ipv4Net = "10.0.0.7/32".parse().unwrap();
        assert!(h.contains(Ipv4Addr::new(10, 0, 0, 7)) && !h.contains(Ipv4Addr::new(10, 0, 0, 8)));
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "10.0.0/8",
            "fd00::1/64",
            "1.2.3.4/+8",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }
}

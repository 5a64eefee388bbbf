//! Validation of names, labels and addresses, with the rules (and close to the words) of the
//! Kubernetes API server (`k8s.io/apimachinery/pkg/util/validation`).
//!
//! Field errors are formatted like Kubernetes' `field.Error`:
//! `spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and
//! 65535, inclusive`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const DNS_LABEL_MAX: usize = 63;
pub const DNS_SUBDOMAIN_MAX: usize = 253;
pub const LABEL_VALUE_MAX: usize = 63;
pub const QUALIFIED_NAME_MAX: usize = 63;
pub const IANA_SVC_NAME_MAX: usize = 15;

const DNS_LABEL_FMT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')";
const DNS1035_LABEL_FMT: &str = "a DNS-1035 label must consist of lower case alphanumeric \
characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123')";
const DNS_SUBDOMAIN_FMT: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";
const QUALIFIED_NAME_FMT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')";
const LABEL_VALUE_FMT: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345')";

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// An RFC 1123 label as Kubernetes checks it (`IsDNS1123Label`): namespace names,
/// container names, StatefulSet names.
pub fn dns_label(s: &str) -> Result<(), String> {
    let mut why = Vec::new();
    if s.len() > DNS_LABEL_MAX {
        why.push(format!("must be no more than {DNS_LABEL_MAX} characters"));
    }
    if !matches_dns_label(s) {
        why.push(DNS_LABEL_FMT.to_string());
    }
    join(why)
}

/// An RFC 1035 label as Kubernetes checks it (`IsDNS1035Label`): Service names. Like a
/// DNS-1123 label, but it must start with a letter.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    let mut why = Vec::new();
    if s.len() > DNS_LABEL_MAX {
        why.push(format!("must be no more than {DNS_LABEL_MAX} characters"));
    }
    if !matches_dns_label(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        why.push(DNS1035_LABEL_FMT.to_string());
    }
    join(why)
}

/// An RFC 1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): at most 253
/// characters, dot-separated labels (each label's own length is not limited, as in
/// Kubernetes). Pod, Node, Deployment names.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    let mut why = Vec::new();
    if s.len() > DNS_SUBDOMAIN_MAX {
        why.push(format!(
            "must be no more than {DNS_SUBDOMAIN_MAX} characters"
        ));
    }
    if !s.split('.').all(matches_dns_label) {
        why.push(DNS_SUBDOMAIN_FMT.to_string());
    }
    join(why)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// A label or annotation key (`IsQualifiedName`): an optional DNS-subdomain prefix and `/`,
/// then a name of at most 63 characters.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let mut why = Vec::new();
    let name = match s.split_once('/') {
        None => s,
        Some((prefix, name)) => {
            if prefix.is_empty() {
                why.push("prefix part must be non-empty".to_string());
            } else if let Err(e) = dns_subdomain(prefix) {
                why.push(format!("prefix part {e}"));
            }
            if name.contains('/') {
                why.push(format!(
                    "a qualified name {QUALIFIED_NAME_FMT} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
                ));
                return join(why);
            }
            name
        }
    };
    if name.is_empty() {
        why.push("name part must be non-empty".to_string());
    } else {
        if name.len() > QUALIFIED_NAME_MAX {
            why.push(format!(
                "name part must be no more than {QUALIFIED_NAME_MAX} characters"
            ));
        }
        if !matches_qualified_part(name) {
            why.push(format!("name part {QUALIFIED_NAME_FMT}"));
        }
    }
    join(why)
}

/// A label value (`IsValidLabelValue`): empty, or at most 63 characters of the qualified-name
/// alphabet.
pub fn label_value(s: &str) -> Result<(), String> {
    let mut why = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        why.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !s.is_empty() && !matches_qualified_part(s) {
        why.push(LABEL_VALUE_FMT.to_string());
    }
    join(why)
}

/// A port name (`IsValidPortName`, an IANA service name, RFC 6335 §5.1): at most 15
/// characters of `[a-z0-9-]`, at least one letter, no `--`, no leading or trailing `-`.
pub fn iana_svc_name(s: &str) -> Result<(), String> {
    let mut why = Vec::new();
    if s.len() > IANA_SVC_NAME_MAX {
        why.push(format!(
            "must be no more than {IANA_SVC_NAME_MAX} characters"
        ));
    }
    if !s.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        why.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        why.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        why.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        why.push("must not begin or end with a hyphen".into());
    }
    join(why)
}

fn join(why: Vec<String>) -> Result<(), String> {
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join(", "))
    }
}

/// Why a string is not an IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpError {
    /// Not an IP address at all.
    Syntax,
    /// An IPv4 address with a 0-prefixed octet (`010.0.0.1`): rejected because libc reads
    /// such octets as octal (CVE-2021-29923).
    LeadingZeros,
    /// A valid IPv6 address.
    Ipv6,
}

/// Parses a dotted-quad IPv4 address strictly (decimal octets, no leading zeros), and says
/// why not otherwise.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, IpError> {
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Ok(a);
    }
    if s.contains(':') && s.parse::<Ipv6Addr>().is_ok() {
        return Err(IpError::Ipv6);
    }
    // What Go's historical parser (netutils.ParseIPSloppy) accepted: four decimal octets,
    // leading zeros allowed.
    let sloppy = s.split('.').count() == 4
        && s.split('.').all(|o| {
            !o.is_empty()
                && o.bytes().all(|b| b.is_ascii_digit())
                && o.parse::<u32>().is_ok_and(|v| v <= 255)
        });
    if sloppy {
        Err(IpError::LeadingZeros)
    } else {
        Err(IpError::Syntax)
    }
}

/// An IP address of either family, strictly parsed; `Ok(Some(v4))` for IPv4, `Ok(None)` for
/// a valid IPv6 address (xdplane carries IPv4 only), `Err(detail)` otherwise.
pub fn parse_ip_any(s: &str) -> Result<Option<Ipv4Addr>, String> {
    match parse_ipv4(s) {
        Ok(a) => Ok(Some(a)),
        Err(IpError::Ipv6) => Ok(None),
        Err(IpError::LeadingZeros) => Err("must not have leading 0s".into()),
        Err(IpError::Syntax) => {
            Err("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into())
        }
    }
}

/// Whether `s` is a valid IPv6 subnet (`2001:db8::/64`, no bits past the prefix).
pub fn parse_ipv6_cidr(s: &str) -> Result<(), String> {
    let (ip, len) = s.split_once('/').ok_or_else(|| {
        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()
    })?;
    let addr: Ipv6Addr = ip.parse().map_err(|_| {
        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()
    })?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".into());
    }
    if len.len() > 1 && len.starts_with('0') {
        return Err("must not have leading 0s in IP or prefix length".into());
    }
    let prefix: u32 = len
        .parse()
        .map_err(|_| "must be a valid CIDR value".to_string())?;
    if prefix > 128 {
        return Err("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".into());
    }
    if addr.to_ipv4_mapped().is_some() {
        return Err("must not have an IPv4-mapped IPv6 address".into());
    }
    let bits = u128::from(addr);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    if bits & !mask != 0 {
        return Err("must not have bits set beyond the prefix length".into());
    }
    Ok(())
}

/// A value printed the way Kubernetes' `field.Error` prints it: strings quoted, numbers bare.
pub enum Shown<'a> {
    Str(&'a str),
    Int(i64),
    Raw(String),
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shown::Str(s) => write!(f, "{s:?}"),
            Shown::Int(i) => write!(f, "{i}"),
            Shown::Raw(s) => f.write_str(s),
        }
    }
}

/// Collects field errors of one object.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<String>);

impl FieldErrors {
    pub fn invalid(&mut self, path: &str, value: Shown<'_>, detail: &str) {
        self.0
            .push(format!("{path}: Invalid value: {value}: {detail}"));
    }
    pub fn required(&mut self, path: &str, detail: &str) {
        if detail.is_empty() {
            self.0.push(format!("{path}: Required value"));
        } else {
            self.0.push(format!("{path}: Required value: {detail}"));
        }
    }
    pub fn unsupported(&mut self, path: &str, value: &str, supported: &[&str]) {
        let mut s = format!("{path}: Unsupported value: {value:?}: supported values: ");
        for (i, v) in supported.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(s, "{v:?}");
        }
        self.0.push(s);
    }
    pub fn duplicate(&mut self, path: &str, value: Shown<'_>) {
        self.0.push(format!("{path}: Duplicate value: {value}"));
    }
    pub fn forbidden(&mut self, path: &str, detail: &str) {
        self.0.push(format!("{path}: Forbidden: {detail}"));
    }
    /// Runs a name check and records its failure as an invalid value at `path`.
    pub fn check(&mut self, path: &str, value: &str, f: fn(&str) -> Result<(), String>) {
        if let Err(e) = f(value) {
            self.invalid(path, Shown::Str(value), &e);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// All errors, `; `-separated.
    pub fn message(&self) -> String {
        self.0.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1035_labels() {
        assert!(dns1035_label("web").is_ok());
        assert!(dns1035_label("nginx-svc").is_ok());
        assert!(dns1035_label("a1").is_ok());
        assert!(
            dns1035_label("1web")
                .unwrap_err()
                .contains("start with an alphabetic")
        );
        assert!(dns1035_label("").is_err());
        assert!(dns1035_label("web-").is_err());
        assert!(dns1035_label("Web").is_err());
        assert!(
            dns1035_label(&"a".repeat(64))
                .unwrap_err()
                .contains("no more than 63")
        );
    }

    #[test]
    fn dns_labels() {
        assert!(dns_label("web").is_ok());
        assert!(dns_label("123-abc").is_ok());
        assert!(dns_label(&"a".repeat(63)).is_ok());
        assert_eq!(
            dns_label(&"a".repeat(64)).unwrap_err(),
            "must be no more than 63 characters"
        );
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "é"] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dns_subdomains() {
        assert!(dns_subdomain("server1").is_ok());
        assert!(dns_subdomain("node.example.com").is_ok());
        // Kubernetes does not limit the length of each label of a subdomain.
        assert!(dns_subdomain(&"a".repeat(100)).is_ok());
        assert!(dns_subdomain(&"a".repeat(254)).is_err());
        for bad in ["", ".a", "a.", "a..b", "Web", "web_1", "a.-b"] {
            assert!(dns_subdomain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn qualified_names_and_values() {
        for ok in [
            "app",
            "App_1.x",
            "kubernetes.io/os",
            "a/b",
            "pod-template-hash",
        ] {
            assert!(qualified_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "Example.com/a",
            &"a".repeat(64),
        ] {
            assert!(qualified_name(bad).is_err(), "{bad:?}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("a b").is_err());
        assert!(label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn port_names() {
        assert!(iana_svc_name("http").is_ok());
        assert!(iana_svc_name("h2c-1").is_ok());
        assert!(iana_svc_name("").is_err());
        assert!(iana_svc_name("123").is_err());
        assert!(iana_svc_name("a--b").is_err());
        assert!(iana_svc_name("-http").is_err());
        assert!(iana_svc_name("HTTP").is_err());
        assert!(iana_svc_name("abcdefghijklmnop").is_err());
    }

    #[test]
    fn ipv4_strict() {
        assert_eq!(parse_ipv4("10.244.1.2"), Ok(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(parse_ipv4("010.244.1.2"), Err(IpError::LeadingZeros));
        assert_eq!(parse_ipv4("fd00::1"), Err(IpError::Ipv6));
        assert_eq!(parse_ipv4("10.244.1"), Err(IpError::Syntax));
        assert_eq!(parse_ipv4("10.244.1.256"), Err(IpError::Syntax));
        assert_eq!(parse_ipv4(" 10.244.1.2"), Err(IpError::Syntax));
        assert_eq!(parse_ip_any("fd00::1"), Ok(None));
        assert!(parse_ip_any("x").is_err());
    }

    #[test]
    fn ipv6_cidrs() {
        assert!(parse_ipv6_cidr("fd00:10:244:1::/64").is_ok());
        assert!(parse_ipv6_cidr("fd00:10:244:1::1/64").is_err());
        assert!(parse_ipv6_cidr("fd00::/129").is_err());
        assert!(parse_ipv6_cidr("fd00::/064").is_err());
        assert!(parse_ipv6_cidr("::ffff:10.0.0.0/120").is_err());
    }

    #[test]
    fn field_error_format() {
        let mut e = FieldErrors::default();
        e.invalid(
            "spec.containers[0].ports[0].containerPort",
            Shown::Int(70000),
            "must be between 1 and 65535, inclusive",
        );
        e.unsupported(
            "spec.containers[0].ports[0].protocol",
            "tcp",
            &["SCTP", "TCP", "UDP"],
        );
        e.required("metadata.name", "");
        assert_eq!(
            e.message(),
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 \
             and 65535, inclusive; spec.containers[0].ports[0].protocol: Unsupported value: \
             \"tcp\": supported values: \"SCTP\", \"TCP\", \"UDP\"; metadata.name: Required value"
        );
    }
}

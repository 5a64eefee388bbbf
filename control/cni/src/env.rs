//! The `CNI_*` environment of one invocation (CNI spec 1.0.0, "Parameters").

use crate::error::CniError;
use std::path::PathBuf;

/// The operation asked for by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// Reads `CNI_COMMAND`. Missing or unknown: code 4.
pub fn command(get: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    match get("CNI_COMMAND").as_deref() {
        None | Some("") => Err(CniError::env("CNI_COMMAND is not set")),
        Some("ADD") => Ok(Command::Add),
        Some("DEL") => Ok(Command::Del),
        Some("CHECK") => Ok(Command::Check),
        Some("VERSION") => Ok(Command::Version),
        Some(other) => Err(CniError::env(format!(
            "unknown CNI_COMMAND {other:?} (supported: ADD, DEL, CHECK, VERSION)"
        ))),
    }
}

/// The parameters of ADD, DEL and CHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpEnv {
    pub command: Command,
    pub container_id: String,
    /// Required for ADD and CHECK; optional for DEL.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    /// The directories of `CNI_PATH`, where delegated (IPAM) plugins are looked up.
    pub path: Vec<PathBuf>,
}

impl OpEnv {
    pub fn from_vars(
        command: Command,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OpEnv, CniError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let container_id = nonempty("CNI_CONTAINERID")
            .ok_or_else(|| CniError::env("CNI_CONTAINERID is not set"))?;
        validate_container_id(&container_id)?;
        let ifname =
            nonempty("CNI_IFNAME").ok_or_else(|| CniError::env("CNI_IFNAME is not set"))?;
        validate_ifname(&ifname)?;
        let netns = nonempty("CNI_NETNS").map(PathBuf::from);
        if command != Command::Del && netns.is_none() {
            return Err(CniError::env(format!(
                "CNI_NETNS is not set (required for {})",
                command.as_str()
            )));
        }
        if let Some(ns) = &netns
            && !ns.is_absolute()
        {
            return Err(CniError::env(format!(
                "CNI_NETNS {} is not an absolute path",
                ns.display()
            )));
        }
        let path: Vec<PathBuf> = nonempty("CNI_PATH")
            .ok_or_else(|| CniError::env("CNI_PATH is not set"))?
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        let args = CniArgs::parse(get("CNI_ARGS").as_deref().unwrap_or(""))?;
        Ok(OpEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The pod's namespace and name from `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, or
    /// `default`/the container ID when the runtime did not pass them.
    pub fn pod(&self) -> (String, String) {
        (
            self.args
                .get("K8S_POD_NAMESPACE")
                .unwrap_or("default")
                .to_string(),
            self.args
                .get("K8S_POD_NAME")
                .unwrap_or(&self.container_id)
                .to_string(),
        )
    }
}

/// `CNI_CONTAINERID`: an alphanumeric first character, then alphanumerics, `_`, `.`, `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit and \
             contain only letters, digits, '_', '.' and '-'"
        )))
    }
}

/// `CNI_IFNAME`: a Linux interface name (1..=15 bytes, not `.`/`..`, no `/`, `:` or space).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        Err(CniError::env(format!(
            "CNI_IFNAME {name:?} is not a valid interface name (1 to 15 bytes, \
             not '.' or '..', no '/', ':' or whitespace)"
        )))
    } else {
        Ok(())
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`. Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(Vec<(String, String)>);

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut out = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::env(format!("CNI_ARGS: {pair:?} is not a KEY=VALUE pair"))
            })?;
            if k.is_empty() {
                return Err(CniError::env(format!(
                    "CNI_ARGS: {pair:?} has an empty key"
                )));
            }
            out.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs(out))
    }

    /// The last value given for `key`, when it is not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn commands() {
        assert_eq!(command(&vars(&[("CNI_COMMAND", "ADD")])), Ok(Command::Add));
        assert_eq!(command(&vars(&[])).unwrap_err().code, 4);
        assert_eq!(
            command(&vars(&[("CNI_COMMAND", "GC")])).unwrap_err().code,
            4
        );
    }

    #[test]
    fn op_env() {
        let full = [
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=nginx-0",
            ),
        ];
        let e = OpEnv::from_vars(Command::Add, &vars(&full)).unwrap();
        assert_eq!(e.path.len(), 2);
        assert_eq!(e.pod(), ("web".into(), "nginx-0".into()));
        // DEL without a netns is fine; ADD is not.
        let no_ns: Vec<_> = full
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .copied()
            .collect();
        assert!(OpEnv::from_vars(Command::Del, &vars(&no_ns)).is_ok());
        assert_eq!(
            OpEnv::from_vars(Command::Add, &vars(&no_ns))
                .unwrap_err()
                .code,
            4
        );
        for missing in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"] {
            let v: Vec<_> = full
                .iter()
                .filter(|(k, _)| *k != missing)
                .copied()
                .collect();
            let err = OpEnv::from_vars(Command::Del, &vars(&v)).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains(missing), "{err}");
        }
        let mut bad = full.to_vec();
        bad[0] = ("CNI_CONTAINERID", "-x");
        assert_eq!(
            OpEnv::from_vars(Command::Add, &vars(&bad))
                .unwrap_err()
                .code,
            4
        );
        let mut bad = full.to_vec();
        bad[2] = ("CNI_IFNAME", "a-very-long-ifname");
        assert_eq!(
            OpEnv::from_vars(Command::Add, &vars(&bad))
                .unwrap_err()
                .code,
            4
        );
        let mut bad = full.to_vec();
        bad[1] = ("CNI_NETNS", "relative/ns");
        assert_eq!(
            OpEnv::from_vars(Command::Add, &vars(&bad))
                .unwrap_err()
                .code,
            4
        );
    }

    #[test]
    fn args_defaults_and_errors() {
        let a = CniArgs::parse("K8S_POD_NAME=;X=1;X=2").unwrap();
        assert_eq!(a.get("X"), Some("2"));
        assert_eq!(a.get("K8S_POD_NAME"), None);
        assert_eq!(CniArgs::parse("novalue").unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("=v").unwrap_err().code, 4);
        let e = OpEnv {
            command: Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: CniArgs::default(),
            path: vec![],
        };
        assert_eq!(e.pod(), ("default".into(), "c1".into()));
    }
}

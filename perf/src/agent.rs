//! Running the xdplane node agent (`xdplane run`) inside a scenario's node namespace: find
//! the binary, start it, wait for its admin socket, register pods, stop it.
use crate::netns::Netns;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use xdplane_api::{Attachment, Client, Request};

/// Name of the agent binary.
pub const AGENT_BIN: &str = "xdplane";

/// The agent binary: `explicit` if given, else `$XDPLANE_BIN_DIR/xdplane`, else `xdplane`
/// next to the running executable (where cargo puts both).
pub fn find_agent_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("agent binary {} not found", p.display());
    }
    if let Some(dir) = std::env::var_os("XDPLANE_BIN_DIR") {
        let p = PathBuf::from(dir).join(AGENT_BIN);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join(AGENT_BIN);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    bail!(
        "the xdplane agent binary was not found (tried {}); build it with `cargo build --release -p xdplane-agent` or set XDPLANE_BIN_DIR",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A running agent started by this process; stopped (SIGTERM, then SIGKILL after 5 s) when
/// dropped. Only this child's PID is ever signalled.
pub struct AgentProcess {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `bin run ARGS… --admin-socket SOCKET` inside `ns` (through `ip netns exec`,
    /// which execs the agent in place: the child's PID is the agent's), output to `log`.
    pub fn start(
        bin: &Path,
        ns: &Netns,
        args: &[String],
        socket: &Path,
        log: &Path,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(bin)
            .arg("run")
            .args(args)
            .arg("--admin-socket")
            .arg(socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(AgentProcess {
            child: Some(child),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits until the admin socket answers `node-info`; fails if the agent exits first.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!(
                    "the agent exited ({st}) before its admin socket answered; log {}:\n{}",
                    self.log.display(),
                    self.log_tail(20)
                );
            }
            if self.socket.exists()
                && let Ok(v) =
                    xdplane_api::call(&self.socket, &Request::NodeInfo, Duration::from_secs(2))
            {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent's admin socket {} did not answer within {timeout:?}; log:\n{}",
                    self.socket.display(),
                    self.log_tail(20)
                );
            }
            if crate::sys::stop_requested() {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Registers a pod interface (the CNI plugin's `attach`).
    pub fn attach(&self, a: Attachment) -> Result<serde_json::Value> {
        let mut c = Client::connect(&self.socket, Duration::from_secs(10))?;
        let name = a.pod_name.clone();
        c.call(&Request::Attach(a))
            .with_context(|| format!("attaching pod {name}; agent log:\n{}", self.log_tail(10)))
    }

    /// A request over the admin socket (e.g. `stats`).
    pub fn call(&self, req: &Request) -> Result<serde_json::Value> {
        Ok(xdplane_api::call(
            &self.socket,
            req,
            Duration::from_secs(5),
        )?)
    }

    /// The last `n` lines of the agent's output.
    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the agent (SIGTERM; SIGKILL after 5 s) and returns how it ended.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("agent already stopped");
        };
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        // The child has not been reaped, so its PID is still ours.
        let _ = crate::sys::kill(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: the agent (PID {}) ignored SIGTERM for 5 s; killing it",
            child.id()
        );
        child.kill()?;
        Ok(child.wait()?)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.terminate()
        {
            eprintln!("warning: stopping the agent: {e:#}");
        }
    }
}

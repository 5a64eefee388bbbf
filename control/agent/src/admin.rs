//! The admin socket server: one JSON request per line, one reply per line.

use crate::daemon::Agent;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use xdplane_api::{Reply, Request};

/// Longest request line accepted (an attach is a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (refusing when another agent answers on it) and serves in a thread.
pub fn serve(path: &Path, agent: Arc<Mutex<Agent>>, stop: Arc<AtomicBool>) -> Result<Server> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "another xdplane agent is already listening on {}",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    l.set_nonblocking(true)?;
    let stop2 = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop_local = stop2.clone();
        std::thread::Builder::new()
            .name("xdplane-admin".into())
            .spawn(move || {
                while !stop_local.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                    match l.accept() {
                        Ok((s, _)) => {
                            let agent = agent.clone();
                            let _ = std::thread::Builder::new()
                                .name("xdplane-admin-conn".into())
                                .spawn(move || handle(s, agent));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "admin accept");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?
    };
    Ok(Server {
        path: path.to_path_buf(),
        stop: stop2,
        thread: Some(thread),
    })
}

fn handle(s: UnixStream, agent: Arc<Mutex<Agent>>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
    let Ok(w) = s.try_clone() else { return };
    let mut w = w;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        match r.by_ref().take(MAX_LINE as u64).read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => return,
        }
        let reply = match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(req) => dispatch(req, &agent),
            Err(e) => Reply::err(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_string(&reply)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"reply encoding"}"#.into());
        out.push('\n');
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

fn dispatch(req: Request, agent: &Mutex<Agent>) -> Reply {
    let mut a = match agent.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    match req {
        Request::NodeInfo => Reply::ok(a.node_info()),
        Request::Attach(at) => match a.attach(at) {
            Ok(port) => Reply::ok(serde_json::json!({ "port": port })),
            Err(e) => Reply::err(format!("{e:#}")),
        },
        Request::Detach { container_id } => match a.detach(&container_id) {
            Ok(found) => Reply::ok(serde_json::json!({ "found": found })),
            Err(e) => Reply::err(format!("{e:#}")),
        },
        Request::Check { container_id } => match a.check(&container_id) {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(format!("{e:#}")),
        },
        Request::Stats => Reply::ok(a.stats()),
        Request::Tables => Reply::ok(&*a.snapshot()),
        Request::Reload => match a.reload() {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(format!("{e:#}")),
        },
        Request::Conntrack { max } => {
            Reply::ok(a.conntrack(max.unwrap_or(xdplane_api::DEFAULT_CONNTRACK_MAX)))
        }
    }
}

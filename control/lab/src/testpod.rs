//! The lab's test pod: a small server in the spirit of upstream `agnhost netexec`, a probe
//! and a UDP flood generator.
//!
//! - `serve`: TCP ports answer HTTP requests (any method and path, `/hostname.html`
//!   included) with `200 OK` and the body `<name>\n`, with keep-alive; a connection whose
//!   first bytes are not an HTTP request line is echoed back. UDP ports answer the datagram
//!   `hostname` with the name and echo anything else. One thread per listener and per
//!   connection, bounded buffers, at most [`MAX_CONNECTIONS`] connections at once; runs
//!   until it is signalled (SIGTERM's default action ends it).
//! - `probe`: one TCP connect (+ an HTTP GET) or one UDP `hostname` exchange; exit 0 when
//!   connected / answered. With `--bytes N`: N bytes of a known pattern through a TCP echo
//!   port and back, checked byte for byte (a bulk transfer: segments of the full MSS, path
//!   MTU discovery).
//! - `flood`: UDP datagrams sent in `sendmmsg` batches, optionally paced.

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most TCP connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 512;
/// Largest HTTP request head accepted (request line + headers).
pub const MAX_HTTP_HEAD: usize = 16 * 1024;
/// Buffer of one echo connection.
const ECHO_BUF: usize = 16 * 1024;
/// Largest UDP datagram handled.
const UDP_BUF: usize = 64 * 1024;
/// An idle connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait for more bytes when the first ones could start an HTTP method.
const SNIFF_TIMEOUT: Duration = Duration::from_millis(200);
/// Datagrams per `sendmmsg` call.
pub const FLOOD_BATCH: usize = 64;

/// The transport of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => bail!("unknown protocol {other:?} (tcp or udp)"),
        }
    }
}

/// What a probe asks the test server: its name (`GET /hostname`, UDP `hostname`) or the
/// client address it saw (`GET /clientip`, UDP `clientip`: `IP:PORT` of the peer as the
/// server's socket reports it, i.e. after any NAT on the way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Ask {
    #[default]
    Hostname,
    Clientip,
}

impl Ask {
    /// The HTTP path / UDP datagram of the question, without the leading `/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ask::Hostname => "hostname",
            Ask::Clientip => "clientip",
        }
    }
}

/// Parses `1s`, `500ms`, `1.5s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid duration {s:?} (e.g. 1s, 500ms)"))?;
    if !v.is_finite() || v < 0.0 || v * mult > 86_400.0 {
        bail!("invalid duration {s:?}");
    }
    Ok(Duration::from_secs_f64(v * mult))
}

fn parse_duration_arg(s: &str) -> std::result::Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Parses a byte count: `1000`, `64K` (KiB), `10M` (MiB), `1G` (GiB).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 1u64 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 1u64 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid size {s:?} (e.g. 1000, 64K, 10M)"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| anyhow::anyhow!("invalid size {s:?}"))
}

fn parse_size_arg(s: &str) -> std::result::Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// `xdplane testpod …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TestpodCmd {
    /// Serve HTTP/echo on TCP ports and hostname/echo on UDP ports until signalled.
    Serve {
        /// The name returned to HTTP requests and to the UDP datagram `hostname`.
        #[arg(long)]
        name: String,
        /// A TCP port to serve (repeatable).
        #[arg(long = "tcp", value_name = "PORT")]
        tcp: Vec<u16>,
        /// A UDP port to serve (repeatable).
        #[arg(long = "udp", value_name = "PORT")]
        udp: Vec<u16>,
        /// The address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: Ipv4Addr,
        /// Record every client on stderr: one line per TCP connection and UDP datagram
        /// (`testpod NAME: tcp 80 from 192.168.50.11:61234`).
        #[arg(long)]
        log_peers: bool,
    },
    /// Connect to IP:PORT (TCP, then an HTTP GET) or ask it `hostname` (UDP); exit 0 on success.
    Probe {
        #[arg(long, value_name = "IP:PORT")]
        to: SocketAddrV4,
        #[arg(long, value_enum, default_value = "tcp")]
        proto: Proto,
        #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
        timeout: Duration,
        /// TCP only: send this many bytes (e.g. 10M) to the echo server and check that
        /// every one comes back, instead of an HTTP GET; the timeout covers the transfer.
        #[arg(long, value_name = "N", value_parser = parse_size_arg)]
        bytes: Option<u64>,
        /// With --bytes: send at most this many bytes per second (e.g. 2M), so that a
        /// transfer lasts a known time.
        #[arg(long, value_name = "BYTES", value_parser = parse_size_arg, requires = "bytes")]
        rate: Option<u64>,
        /// What to ask: the server's name, or the client address it sees (`clientip`).
        #[arg(long, value_enum, default_value = "hostname")]
        ask: Ask,
    },
    /// Send COUNT UDP datagrams to IP:PORT with sendmmsg; prints how many were sent.
    Flood {
        #[arg(long, value_name = "IP:PORT")]
        to: SocketAddrV4,
        #[arg(long)]
        count: u64,
        /// UDP payload bytes per datagram (the first 8 carry a sequence number).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Datagrams per second (unpaced when absent).
        #[arg(long, value_name = "PPS")]
        rate: Option<u64>,
    },
}

/// Runs a `testpod` subcommand; returns the exit code.
pub fn run_testpod(cmd: TestpodCmd) -> Result<i32> {
    match cmd {
        TestpodCmd::Serve {
            name,
            tcp,
            udp,
            bind,
            log_peers,
        } => {
            let tcp: Vec<SocketAddr> = tcp.iter().map(|p| SocketAddr::from((bind, *p))).collect();
            let udp: Vec<SocketAddr> = udp.iter().map(|p| SocketAddr::from((bind, *p))).collect();
            let server = Server::start_logging(&name, &tcp, &udp, log_peers)?;
            crate::outln!("{}", server.ready_line());
            std::io::stdout().flush()?;
            server.wait();
            Ok(0)
        }
        TestpodCmd::Probe {
            to,
            proto,
            timeout,
            bytes,
            rate,
            ask,
        } => {
            let out = match bytes {
                Some(n) if proto == Proto::Tcp => {
                    transfer_paced(SocketAddr::V4(to), n, rate, timeout)
                }
                Some(_) => bail!("--bytes needs --proto tcp (it goes through the TCP echo)"),
                None => probe_ask(SocketAddr::V4(to), proto, ask, timeout),
            };
            crate::outln!("{}", out.detail);
            Ok(if out.ok { 0 } else { 1 })
        }
        TestpodCmd::Flood {
            to,
            count,
            size,
            rate,
        } => {
            let rep = flood(to, count, size, rate)?;
            crate::outln!(
                "sent {} of {} datagrams ({} bytes of payload each) to {to} in {:.3}s ({:.0} pps), {} send errors",
                rep.sent,
                count,
                size,
                rep.elapsed.as_secs_f64(),
                rep.pps(),
                rep.errors
            );
            Ok(if rep.sent == count { 0 } else { 1 })
        }
    }
}

// ---------------------------------------------------------------------------------------
// serve

/// A running test server.
pub struct Server {
    pub name: String,
    /// The bound TCP addresses (port 0 resolved).
    pub tcp: Vec<SocketAddr>,
    /// The bound UDP addresses.
    pub udp: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every port, then serves each on its own thread.
    pub fn start(name: &str, tcp: &[SocketAddr], udp: &[SocketAddr]) -> Result<Server> {
        Server::start_logging(name, tcp, udp, false)
    }

    /// [`Server::start`]; with `log_peers`, every TCP connection and UDP datagram is
    /// recorded on stderr with the client's address.
    pub fn start_logging(
        name: &str,
        tcp: &[SocketAddr],
        udp: &[SocketAddr],
        log_peers: bool,
    ) -> Result<Server> {
        if tcp.is_empty() && udp.is_empty() {
            bail!("give at least one --tcp or --udp port");
        }
        let name: Arc<str> = Arc::from(name);
        let conns = Arc::new(AtomicUsize::new(0));
        let mut listeners = Vec::new();
        for a in tcp {
            listeners.push(TcpListener::bind(a).with_context(|| format!("binding tcp {a}"))?);
        }
        let mut sockets = Vec::new();
        for a in udp {
            sockets.push(UdpSocket::bind(a).with_context(|| format!("binding udp {a}"))?);
        }
        let mut server = Server {
            name: name.to_string(),
            tcp: listeners
                .iter()
                .map(TcpListener::local_addr)
                .collect::<std::io::Result<_>>()?,
            udp: sockets
                .iter()
                .map(UdpSocket::local_addr)
                .collect::<std::io::Result<_>>()?,
            threads: Vec::new(),
        };
        for l in listeners {
            let (name, conns) = (name.clone(), conns.clone());
            server.threads.push(std::thread::spawn(move || {
                accept_loop(l, name, conns, log_peers)
            }));
        }
        for s in sockets {
            let name = name.clone();
            server
                .threads
                .push(std::thread::spawn(move || udp_loop(s, name, log_peers)));
        }
        Ok(server)
    }

    /// The line printed once every port is bound (the lab waits for it in the log).
    pub fn ready_line(&self) -> String {
        let ports = |v: &[SocketAddr]| {
            v.iter()
                .map(|a| a.port().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "testpod {}: serving tcp [{}] udp [{}]",
            self.name,
            ports(&self.tcp),
            ports(&self.udp)
        )
    }

    /// Blocks for as long as the server runs.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(l: TcpListener, name: Arc<str>, conns: Arc<AtomicUsize>, log_peers: bool) {
    let port = l.local_addr().map_or(0, |a| a.port());
    loop {
        let stream = match l.accept() {
            Ok((s, peer)) => {
                if log_peers {
                    eprintln!("testpod {name}: tcp {port} from {peer}");
                }
                s
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("testpod {name}: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if conns.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            conns.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let (name, conns) = (name.clone(), conns.clone());
        let spawned = std::thread::Builder::new().spawn(move || {
            let _ = serve_conn(stream, &name);
            conns.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            eprintln!("testpod: cannot start a connection thread: {e}");
        }
    }
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Whether the first bytes of a connection are an HTTP request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    Http,
    Echo,
    /// A prefix of a method: wait for more bytes.
    NeedMore,
}

pub fn sniff(buf: &[u8]) -> Sniff {
    let mut more = false;
    for m in METHODS {
        if buf.starts_with(m) {
            return Sniff::Http;
        }
        if m.starts_with(buf) {
            more = true;
        }
    }
    if more { Sniff::NeedMore } else { Sniff::Echo }
}

fn serve_conn(mut s: TcpStream, name: &str) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; MAX_HTTP_HEAD];
    let mut len = 0;
    s.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let kind = loop {
        let n = match s.read(&mut buf[len..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e)
                if len > 0 && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break Sniff::Echo;
            }
            Err(e) => return Err(e),
        };
        len += n;
        match sniff(&buf[..len]) {
            Sniff::NeedMore => s.set_read_timeout(Some(SNIFF_TIMEOUT))?,
            k => break k,
        }
    };
    s.set_read_timeout(Some(IDLE_TIMEOUT))?;
    match kind {
        Sniff::Http => {
            let peer = s.peer_addr()?;
            serve_http(s, name, peer, buf, len)
        }
        _ => serve_echo(s, &buf[..len]),
    }
}

fn serve_echo(mut s: TcpStream, first: &[u8]) -> std::io::Result<()> {
    s.write_all(first)?;
    let mut buf = vec![0u8; ECHO_BUF];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => s.write_all(&buf[..n])?,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub keep_alive: bool,
    pub content_length: u64,
    pub chunked: bool,
}

/// Parses a request head (without the blank line). `None` when it is not HTTP/1.x.
pub fn parse_head(head: &[u8]) -> Option<RequestHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || target.is_empty() {
        return None;
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let mut keep_alive = http11;
    let mut content_length = 0;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "connection" if v.split(',').any(|t| t.trim() == "close") => keep_alive = false,
            "connection" if v.split(',').any(|t| t.trim() == "keep-alive") => keep_alive = true,
            "content-length" => content_length = v.parse().ok()?,
            "transfer-encoding" => chunked = v.contains("chunked"),
            _ => {}
        }
    }
    Some(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive,
        content_length,
        chunked,
    })
}

fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    s.write_all(&out)
}

/// The body of the answer to a request for `target`: the client's address for `/clientip`
/// (query string ignored), the server's name for anything else.
pub fn http_body(target: &str, name: &str, peer: SocketAddr) -> String {
    let path = target.split('?').next().unwrap_or(target);
    if path == "/clientip" {
        format!("{peer}\n")
    } else {
        format!("{name}\n")
    }
}

fn serve_http(
    mut s: TcpStream,
    name: &str,
    peer: SocketAddr,
    mut buf: Vec<u8>,
    mut len: usize,
) -> std::io::Result<()> {
    loop {
        let Some((head_end, body_start)) = find_head_end(&buf[..len]) else {
            if len == buf.len() {
                return respond(
                    &mut s,
                    "431 Request Header Fields Too Large",
                    b"",
                    false,
                    false,
                );
            }
            match s.read(&mut buf[len..]) {
                Ok(0) => return Ok(()),
                Ok(n) => len += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            continue;
        };
        let Some(req) = parse_head(&buf[..head_end]) else {
            return respond(&mut s, "400 Bad Request", b"bad request\n", false, false);
        };
        if req.chunked {
            return respond(
                &mut s,
                "501 Not Implemented",
                b"chunked bodies are not supported\n",
                false,
                false,
            );
        }
        // Discard the body: what is buffered, then the rest from the socket.
        let buffered = (len - body_start) as u64;
        let take = req.content_length.min(buffered) as usize;
        let consumed = body_start + take;
        buf.copy_within(consumed..len, 0);
        len -= consumed;
        let mut rest = req.content_length - take as u64;
        let mut sink = [0u8; 4096];
        while rest > 0 {
            let want = rest.min(sink.len() as u64) as usize;
            match s.read(&mut sink[..want]) {
                Ok(0) => return Ok(()),
                Ok(n) => rest -= n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let body = http_body(&req.target, name, peer);
        respond(
            &mut s,
            "200 OK",
            body.as_bytes(),
            req.keep_alive,
            req.method == "HEAD",
        )?;
        if !req.keep_alive {
            return Ok(());
        }
    }
}

fn udp_loop(s: UdpSocket, name: Arc<str>, log_peers: bool) {
    let port = s.local_addr().map_or(0, |a| a.port());
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        let (n, peer) = match s.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP errors of earlier replies surface here on some kernels: keep serving.
                if e.kind() != ErrorKind::ConnectionRefused {
                    eprintln!("testpod {name}: udp recv: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        if log_peers {
            eprintln!("testpod {name}: udp {port} from {peer}");
        }
        let msg = &buf[..n];
        let client;
        let reply: &[u8] = match msg.trim_ascii() {
            b"hostname" => name.as_bytes(),
            b"clientip" => {
                client = peer.to_string();
                client.as_bytes()
            }
            _ => msg,
        };
        let _ = s.send_to(reply, peer);
    }
}

// ---------------------------------------------------------------------------------------
// probe

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// TCP: the connection was established. UDP: a reply came back.
    pub ok: bool,
    /// What the server said: the HTTP body (first line) or the UDP reply.
    pub answer: Option<String>,
    /// One human-readable line.
    pub detail: String,
}

fn printable(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let line = s.trim().lines().next().unwrap_or("").to_string();
    line.chars().take(120).collect()
}

/// Probes `to` once over `proto` (asking its name), everything within `timeout`.
pub fn probe(to: SocketAddr, proto: Proto, timeout: Duration) -> ProbeOutcome {
    probe_ask(to, proto, Ask::Hostname, timeout)
}

/// Probes `to` once over `proto` with the question `ask`, everything within `timeout`.
pub fn probe_ask(to: SocketAddr, proto: Proto, ask: Ask, timeout: Duration) -> ProbeOutcome {
    match proto {
        Proto::Tcp => probe_tcp(to, ask, timeout),
        Proto::Udp => probe_udp(to, ask, timeout),
    }
}

fn probe_tcp(to: SocketAddr, ask: Ask, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let timeout = timeout.max(Duration::from_millis(1));
    let mut s = match TcpStream::connect_timeout(&to, timeout) {
        Ok(s) => s,
        Err(e) => {
            let why = match e.kind() {
                ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                    format!("no answer within {}", fmt_dur(timeout))
                }
                ErrorKind::ConnectionRefused => "refused".to_string(),
                _ => e.to_string(),
            };
            return ProbeOutcome {
                ok: false,
                answer: None,
                detail: format!("tcp {to}: not connected: {why}"),
            };
        }
    };
    let connect_ms = start.elapsed().as_secs_f64() * 1e3;
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(100));
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    let req = format!(
        "GET /{} HTTP/1.1\r\nHost: {to}\r\nUser-Agent: xdplane-testpod\r\nConnection: close\r\n\r\n",
        ask.as_str()
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    if s.write_all(req.as_bytes()).is_ok() {
        let deadline = Instant::now() + left;
        while got.len() < 64 * 1024 && Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            if http_complete(&got) {
                break;
            }
        }
    }
    let (answer, what) = describe_tcp_reply(&got);
    ProbeOutcome {
        ok: true,
        answer,
        detail: format!("tcp {to}: connected in {connect_ms:.1} ms; {what}"),
    }
}

/// True once `got` holds a whole HTTP response (head + Content-Length bytes).
fn http_complete(got: &[u8]) -> bool {
    let Some((head_end, body_start)) = find_head_end(got) else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let cl = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    cl.is_some_and(|cl| got.len() >= body_start + cl)
}

fn describe_tcp_reply(got: &[u8]) -> (Option<String>, String) {
    if got.is_empty() {
        return (None, "no reply".into());
    }
    if got.starts_with(b"HTTP/") {
        let status = printable(got.split(|b| *b == b'\n').next().unwrap_or_default());
        let body = find_head_end(got)
            .map(|(_, b)| printable(&got[b..]))
            .unwrap_or_default();
        return (Some(body.clone()), format!("{status}, body {body:?}"));
    }
    let text = printable(got);
    (Some(text.clone()), format!("reply {text:?}"))
}

fn probe_udp(to: SocketAddr, ask: Ask, timeout: Duration) -> ProbeOutcome {
    let fail = |why: String| ProbeOutcome {
        ok: false,
        answer: None,
        detail: format!("udp {to}: {why}"),
    };
    let s = match UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot open a socket: {e}")),
    };
    if let Err(e) = s.connect(to) {
        return fail(format!("cannot connect: {e}"));
    }
    let start = Instant::now();
    let deadline = start + timeout.max(Duration::from_millis(1));
    // Up to three attempts inside the timeout (the first datagram may wait on ARP).
    let step = (timeout / 3).max(Duration::from_millis(1));
    let mut buf = [0u8; 2048];
    let mut refused = false;
    while Instant::now() < deadline {
        if let Err(e) = s.send(ask.as_str().as_bytes()) {
            if e.kind() == ErrorKind::ConnectionRefused {
                refused = true;
                break;
            }
            return fail(format!("send: {e}"));
        }
        let wait = step.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() || s.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match s.recv(&mut buf) {
            Ok(n) => {
                let text = printable(&buf[..n]);
                return ProbeOutcome {
                    ok: true,
                    answer: Some(text.clone()),
                    detail: format!(
                        "udp {to}: reply {text:?} in {:.1} ms",
                        start.elapsed().as_secs_f64() * 1e3
                    ),
                };
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            Err(_) => {}
        }
    }
    if refused {
        fail("refused (ICMP port unreachable)".into())
    } else {
        fail(format!("no reply within {}", fmt_dur(timeout)))
    }
}

/// Length of the transfer pattern's period (a prime, so that it never lines up with
/// segment or buffer sizes).
const PATTERN_PERIOD: usize = 65_521;

/// The bytes [`transfer`] sends: a fixed pseudo-random sequence of period
/// [`PATTERN_PERIOD`], starting with a byte that cannot begin an HTTP method (so the test
/// server echoes at once).
fn pattern() -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    let mut v: Vec<u8> = (0..PATTERN_PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    v[0] = 0;
    v
}

/// Sends `bytes` bytes of the pattern to the TCP echo at `to` while reading the echo back,
/// and checks every byte; everything within `timeout`.
pub fn transfer(to: SocketAddr, bytes: u64, timeout: Duration) -> ProbeOutcome {
    transfer_paced(to, bytes, None, timeout)
}

/// [`transfer`], sending at most `rate` bytes per second when given (the transfer then
/// lasts about `bytes / rate` seconds).
pub fn transfer_paced(
    to: SocketAddr,
    bytes: u64,
    rate: Option<u64>,
    timeout: Duration,
) -> ProbeOutcome {
    let fail = |why: String| ProbeOutcome {
        ok: false,
        answer: None,
        detail: format!("tcp {to}: {why}"),
    };
    let start = Instant::now();
    let deadline = start + timeout.max(Duration::from_millis(1));
    let s = match TcpStream::connect_timeout(&to, timeout.max(Duration::from_millis(1))) {
        Ok(s) => s,
        Err(e) => return fail(format!("not connected: {e}")),
    };
    let connect_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(e) => return fail(format!("cannot clone the socket: {e}")),
    };
    let pat = Arc::new(pattern());
    let wpat = pat.clone();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = w.set_write_timeout(Some(left));
    let rate = rate.filter(|r| *r > 0);
    let writer = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut sent: u64 = 0;
        // Paced: about 20 writes per second.
        let chunk = rate.map_or(64 * 1024, |r| (r / 20).clamp(1, 64 * 1024) as usize);
        let began = Instant::now();
        while sent < bytes {
            if let Some(r) = rate {
                let due = began + Duration::from_secs_f64(sent as f64 / r as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let off = (sent % PATTERN_PERIOD as u64) as usize;
            let n = (bytes - sent)
                .min(chunk as u64)
                .min((PATTERN_PERIOD - off) as u64) as usize;
            w.write_all(&wpat[off..off + n])?;
            sent += n as u64;
        }
        w.shutdown(std::net::Shutdown::Write)?;
        Ok(sent)
    });
    let mut r = s;
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bad: Option<u64> = None;
    let mut read_err: Option<String> = None;
    while got < bytes {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            read_err = Some(format!("timed out after {}", fmt_dur(timeout)));
            break;
        }
        let _ = r.set_read_timeout(Some(left));
        match r.read(&mut buf) {
            Ok(0) => {
                read_err = Some("the server closed the connection early".into());
                break;
            }
            Ok(n) => {
                for (i, b) in buf[..n].iter().enumerate() {
                    let at = got + i as u64;
                    if *b != pat[(at % PATTERN_PERIOD as u64) as usize] {
                        bad = Some(at);
                        break;
                    }
                }
                got += n as u64;
                if bad.is_some() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                read_err = Some(format!("timed out after {}", fmt_dur(timeout)));
                break;
            }
            Err(e) => {
                read_err = Some(e.to_string());
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    if bad.is_some() || read_err.is_some() {
        // Unblock the writer (it may wait on a full window) before joining it.
        let _ = r.shutdown(std::net::Shutdown::Both);
    }
    let sent = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")));
    if let Some(at) = bad {
        return fail(format!("the echo differs from what was sent at byte {at}"));
    }
    if let Some(e) = read_err {
        return fail(format!("got {got} of {bytes} bytes back: {e}"));
    }
    if let Err(e) = sent {
        return fail(format!("sending: {e}"));
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    ProbeOutcome {
        ok: true,
        answer: Some(format!("{bytes} bytes")),
        detail: format!(
            "tcp {to}: connected in {connect_ms:.1} ms; {bytes} bytes sent and echoed back intact in {:.3} s ({:.1} Mbit/s each way)",
            secs,
            bytes as f64 * 8.0 / secs / 1e6
        ),
    }
}

fn fmt_dur(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

// ---------------------------------------------------------------------------------------
// flood

/// What a flood did.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodReport {
    pub sent: u64,
    /// sendmmsg calls that failed with something other than a full queue.
    pub errors: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn pps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.sent as f64 / s } else { 0.0 }
    }
}

/// Sends `count` UDP datagrams of `size` payload bytes to `to`, [`FLOOD_BATCH`] per
/// `sendmmsg`, paced to `rate` per second when given. The first 8 payload bytes of each
/// datagram carry its sequence number (big-endian), the rest is `0x5a`.
pub fn flood(to: SocketAddrV4, count: u64, size: usize, rate: Option<u64>) -> Result<FloodReport> {
    if size > 65_507 {
        bail!("--size {size} is larger than a UDP datagram can be (65507)");
    }
    if rate == Some(0) {
        bail!("--rate must be at least 1");
    }
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .context("opening a UDP socket")?;
    let fd = sock.as_raw_fd();
    let addr = SockaddrIn::from(to);
    let addrs = [Some(addr); FLOOD_BATCH];
    let mut bufs = vec![vec![0x5au8; size]; FLOOD_BATCH];
    let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(FLOOD_BATCH, None);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    let mut stalled_since: Option<Instant> = None;
    while sent < count {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / r as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let mut n = (count - sent).min(FLOOD_BATCH as u64) as usize;
        if let Some(r) = rate {
            // Keep batches to about 1 ms of traffic so pacing stays smooth.
            n = n.min(((r / 1000).max(1) as usize).min(FLOOD_BATCH));
        }
        for (i, b) in bufs[..n].iter_mut().enumerate() {
            let seq = (sent + i as u64).to_be_bytes();
            let k = b.len().min(8);
            b[..k].copy_from_slice(&seq[..k]);
        }
        let iovs: Vec<[IoSlice<'_>; 1]> = bufs[..n].iter().map(|b| [IoSlice::new(b)]).collect();
        let res = sendmmsg(fd, &mut hdrs, &iovs, &addrs[..n], [], MsgFlags::empty());
        match res {
            Ok(r) => {
                let k = r.count() as u64;
                if k > 0 {
                    stalled_since = None;
                }
                sent += k;
            }
            Err(Errno::ENOBUFS | Errno::EAGAIN | Errno::EINTR) => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    bail!("the socket accepted nothing for 10 s (sent {sent})");
                }
                std::thread::yield_now();
            }
            Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => {
                // Reported for an earlier datagram: the current batch was not sent.
                errors += 1;
                if errors > 1000 {
                    bail!("too many send errors (sent {sent}): destination unreachable");
                }
            }
            Err(e) => return Err(e).context(format!("sendmmsg to {to}")),
        }
    }
    Ok(FloodReport {
        sent,
        errors,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_server(name: &str) -> (SocketAddr, SocketAddr) {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let s = Server::start(name, &[any], &[any]).unwrap();
        let out = (s.tcp[0], s.udp[0]);
        assert!(s.ready_line().contains(&format!("tcp [{}]", out.0.port())));
        std::thread::spawn(move || s.wait());
        out
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("NaNs").is_err());
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(sniff(b"GE"), Sniff::NeedMore);
        assert_eq!(sniff(b"P"), Sniff::NeedMore);
        assert_eq!(sniff(b"hello"), Sniff::Echo);
        assert_eq!(sniff(b"GET/"), Sniff::Echo);
    }

    #[test]
    fn request_heads() {
        let h = parse_head(b"GET /hostname.html HTTP/1.1\r\nHost: x").unwrap();
        assert_eq!(h.target, "/hostname.html");
        assert!(h.keep_alive);
        let h = parse_head(b"GET / HTTP/1.0").unwrap();
        assert!(!h.keep_alive);
        let h = parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").unwrap();
        assert!(h.keep_alive);
        let h = parse_head(b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5").unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.content_length, 5);
        assert!(parse_head(b"GET / HTTP/2").is_none());
        assert!(parse_head(b"GET /").is_none());
        assert!(parse_head(b"POST / HTTP/1.1\r\nContent-Length: x").is_none());
    }

    #[test]
    fn http_keep_alive_and_pipelining() {
        let (tcp, _) = local_server("pod-a");
        let mut s = TcpStream::connect(tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Two pipelined requests (the second with a body) on one connection, then a third.
        s.write_all(b"GET /hostname.html HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap();
        let want = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\npod-a\n";
        let mut got = vec![0u8; want.len() * 2];
        s.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want.repeat(2));
        s.write_all(b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
        assert!(
            rest.ends_with("Connection: close\r\n\r\n"),
            "HEAD has no body: {rest}"
        );
    }

    #[test]
    fn http_bad_and_oversized() {
        let (tcp, _) = local_server("pod-b");
        let mut s = TcpStream::connect(tcp).unwrap();
        s.write_all(b"GET / SPDY/9\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");

        let mut s = TcpStream::connect(tcp).unwrap();
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', MAX_HTTP_HEAD));
        s.write_all(&req).unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    }

    #[test]
    fn tcp_echo() {
        let (tcp, _) = local_server("pod-c");
        let mut s = TcpStream::connect(tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut got = [0u8; 6];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\n");
        // A method prefix that never completes is echoed after the sniff timeout.
        let mut s = TcpStream::connect(tcp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GE").unwrap();
        let mut got = [0u8; 2];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GE");
    }

    #[test]
    fn probes_against_the_server() {
        let (tcp, udp) = local_server("pod-d");
        let t = probe(tcp, Proto::Tcp, Duration::from_secs(2));
        assert!(t.ok, "{t:?}");
        assert_eq!(t.answer.as_deref(), Some("pod-d"));
        assert!(t.detail.contains("200 OK"), "{}", t.detail);
        let u = probe(udp, Proto::Udp, Duration::from_secs(2));
        assert!(u.ok, "{u:?}");
        assert_eq!(u.answer.as_deref(), Some("pod-d"));

        // UDP echo of anything but "hostname".
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.send_to(b"ping 1", udp).unwrap();
        let mut b = [0u8; 64];
        let (n, _) = c.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"ping 1");
    }

    #[test]
    fn client_address_is_reported() {
        let (tcp, udp) = local_server("pod-ip");
        // TCP: /clientip answers the peer's address as the server's socket sees it.
        let mut s = TcpStream::connect(tcp).unwrap();
        let me = s.local_addr().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /clientip?x=1 HTTP/1.0\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        assert!(r.ends_with(&format!("\r\n\r\n{me}\n")), "{r}");
        let t = probe_ask(tcp, Proto::Tcp, Ask::Clientip, Duration::from_secs(2));
        assert!(t.ok, "{t:?}");
        let seen: SocketAddr = t.answer.unwrap().parse().unwrap();
        assert_eq!(seen.ip(), Ipv4Addr::LOCALHOST);
        // Other paths still answer the name.
        assert_eq!(http_body("/hostname", "n", me), "n\n");
        assert_eq!(http_body("/clientipx", "n", me), "n\n");
        // UDP: the datagram "clientip".
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.send_to(b"clientip\n", udp).unwrap();
        let mut b = [0u8; 64];
        let (n, _) = c.recv_from(&mut b).unwrap();
        assert_eq!(
            std::str::from_utf8(&b[..n]).unwrap(),
            c.local_addr().unwrap().to_string()
        );
        let u = probe_ask(udp, Proto::Udp, Ask::Clientip, Duration::from_secs(2));
        assert!(u.ok, "{u:?}");
        assert!(u.answer.unwrap().starts_with("127.0.0.1:"));
    }

    #[test]
    fn paced_transfer_takes_its_time() {
        let (tcp, _) = local_server("pod-pace");
        let t = transfer_paced(tcp, 200_000, Some(400_000), Duration::from_secs(10));
        assert!(t.ok, "{}", t.detail);
        let secs: f64 = t
            .detail
            .split(" intact in ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap();
        assert!((0.4..3.0).contains(&secs), "{}", t.detail);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("0").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn transfer_through_the_echo() {
        let (tcp, _) = local_server("pod-t");
        let p = pattern();
        assert_eq!(p[0], 0);
        assert_eq!(sniff(&p[..1]), Sniff::Echo);
        let t = transfer(tcp, 3 * PATTERN_PERIOD as u64 + 17, Duration::from_secs(20));
        assert!(t.ok, "{}", t.detail);
        assert!(t.detail.contains("echoed back intact"), "{}", t.detail);
        // A server that answers something else fails the check.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let _ = c.write_all(&[1u8; 100]);
            }
        });
        let t = transfer(addr, 1000, Duration::from_secs(5));
        assert!(!t.ok);
        assert!(t.detail.contains("differs"), "{}", t.detail);
    }

    #[test]
    fn probes_that_fail() {
        // A port nobody listens on: TCP refused, UDP refused or silent.
        let free = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = probe(free, Proto::Tcp, Duration::from_millis(300));
        assert!(!t.ok, "{t:?}");
        let u_free = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let u = probe(u_free, Proto::Udp, Duration::from_millis(300));
        assert!(!u.ok, "{u:?}");
        // A UDP socket that never answers.
        let mute = UdpSocket::bind("127.0.0.1:0").unwrap();
        let u = probe(
            mute.local_addr().unwrap(),
            Proto::Udp,
            Duration::from_millis(300),
        );
        assert!(!u.ok);
        assert!(u.detail.contains("no reply"), "{}", u.detail);
    }

    #[test]
    fn flood_counts_and_sequences() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let SocketAddr::V4(to) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        let count = 300;
        // The receiver drains concurrently, and the flood is paced, so that the loopback
        // socket's buffer never overflows.
        let reader = std::thread::spawn(move || {
            let mut b = [0u8; 128];
            let mut seqs = Vec::new();
            while let Ok(n) = rx.recv(&mut b) {
                assert_eq!(n, 64);
                seqs.push(u64::from_be_bytes(b[..8].try_into().unwrap()));
                if seqs.len() as u64 == count {
                    break;
                }
            }
            seqs
        });
        let rep = flood(to, count, 64, Some(20_000)).unwrap();
        assert_eq!(rep.sent, count);
        assert_eq!(rep.errors, 0);
        let seqs = reader.join().unwrap();
        assert_eq!(
            seqs,
            (0..count).collect::<Vec<_>>(),
            "every datagram, in order"
        );
    }

    #[test]
    fn flood_pacing() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(to) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        let rep = flood(to, 200, 16, Some(1000)).unwrap();
        assert_eq!(rep.sent, 200);
        assert!(
            rep.elapsed >= Duration::from_millis(180),
            "{:?}",
            rep.elapsed
        );
        assert!(flood(to, 1, 70_000, None).is_err());
        assert!(flood(to, 1, 10, Some(0)).is_err());
    }
}

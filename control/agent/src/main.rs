//! `xdplane`: the node agent and its command line.
#![forbid(unsafe_code)]

mod admin;
mod daemon;
mod nat;
mod neigh;
mod netinfo;
mod show;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xdplane",
    version,
    about = "A userspace AF_XDP packet dataplane for Kubernetes nodes",
    long_about = "xdplane receives and sends packets over AF_XDP in poll-mode workers pinned to \
                  cores, and does what a node's kernel datapath does for flannel, kube-proxy, \
                  NetworkPolicy and ingress-nginx."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node agent: workers, XDP program, admin socket (until SIGINT/SIGTERM).
    Run(daemon::RunOpts),
    /// Show per-worker and per-port counters of a running agent.
    Stats(show::ClientOpts),
    /// Show the tables of the current snapshot of a running agent.
    Tables(show::ClientOpts),
    /// Make a running agent re-read its manifest directory.
    Reload(show::ClientOpts),
    /// List the live flows of a running agent's connection-tracking table.
    Conntrack(show::ConntrackOpts),
    /// The network-namespace lab: a cluster of nodes and pods on this machine.
    #[command(subcommand)]
    Lab(xdplane_lab::cli::LabCmd),
    /// The lab's test pod (an agnhost-like server, probe and flood).
    #[command(subcommand)]
    Testpod(xdplane_lab::testpod::TestpodCmd),
    /// Benchmarks: xdplane and the Linux kernel side by side on the same topology.
    #[command(subcommand)]
    Bench(xdplane_perf::cli::BenchCmd),
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("XDPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let r = match cli.cmd {
        Cmd::Run(o) => daemon::run(o),
        Cmd::Stats(o) => show::stats(&o),
        Cmd::Tables(o) => show::tables(&o),
        Cmd::Reload(o) => show::reload(&o),
        Cmd::Conntrack(o) => show::conntrack(&o),
        Cmd::Lab(c) => xdplane_lab::cli::run_lab(c),
        Cmd::Testpod(c) => xdplane_lab::testpod::run_testpod(c),
        Cmd::Bench(c) => xdplane_perf::cli::run_bench(c),
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xdplane: error: {e:#}");
            std::process::exit(1);
        }
    }
}

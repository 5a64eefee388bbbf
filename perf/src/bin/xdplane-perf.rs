//! `xdplane-perf`: the perf lab's commands without the agent binary (the same subcommands
//! as `xdplane bench …`).
#![forbid(unsafe_code)]

use clap::Parser;

/// xdplane's traffic generator, sink and side-by-side benchmarks (root required).
#[derive(Parser)]
#[command(name = "xdplane-perf", version)]
struct Cli {
    #[command(subcommand)]
    cmd: xdplane_perf::cli::BenchCmd,
}

fn main() {
    let cli = Cli::parse();
    match xdplane_perf::cli::run_bench(cli.cmd) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

//! The `xdplane-cni` binary: environment and stdin in, one JSON object on stdout.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let get = |k: &str| std::env::var(k).ok();
    let read_stdin = || {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    };
    let (out, code) = match xdplane_cni::run(&get, read_stdin) {
        Ok(serde_json::Value::Null) => (None, ExitCode::SUCCESS),
        Ok(v) => (Some(v), ExitCode::SUCCESS),
        Err((e, ver)) => {
            xdplane_cni::cmd::log(format!("error: {e}"));
            (Some(e.to_json(&ver)), ExitCode::FAILURE)
        }
    };
    if let Some(v) = out {
        let mut stdout = std::io::stdout().lock();
        let line = serde_json::to_string(&v).unwrap_or_else(|_| "{}".to_string());
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    code
}

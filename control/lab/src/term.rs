//! Writing to stdout without panicking when the reader has gone (`xdplane lab status | head`).

use std::io::Write;

/// Writes `s` and a newline to stdout. A closed pipe ends the output quietly; other write
/// errors are ignored too (there is nowhere left to report them).
pub fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(s.as_bytes())
        .and_then(|()| out.write_all(b"\n"));
}

/// `println!` that never panics on a closed stdout.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::term::line("")
    };
    ($($arg:tt)*) => {
        $crate::term::line(&format!($($arg)*))
    };
}

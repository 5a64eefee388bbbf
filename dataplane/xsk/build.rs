//! Builds the XDP program `bpf/xdplane_redirect.c` with clang into OUT_DIR; the crate
//! embeds the object with `include_bytes!`.

use std::env;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;

const SRC: &str = "bpf/xdplane_redirect.c";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("xdplane_redirect.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // Debian keeps <asm/types.h> under the multiarch directory of the build host.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");

    let result = Command::new(&clang)
        .args([
            "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", &multiarch, "-c", SRC, "-o",
        ])
        .arg(&out)
        .output();
    match result {
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "xdplane-xsk: `{clang}` not found. The XDP program {SRC} is compiled with clang: \
             install it (Debian: `apt-get install clang libbpf-dev`) or set CLANG=/path/to/clang"
        ),
        Err(e) => panic!("xdplane-xsk: cannot run `{clang}`: {e}"),
        Ok(o) if !o.status.success() => panic!(
            "xdplane-xsk: `{clang}` failed to compile {SRC} ({}). Headers come from \
             libbpf-dev (<bpf/bpf_helpers.h>) and linux-libc-dev.\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }
}

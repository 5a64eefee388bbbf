//! Builds the generator and sink XDP programs (perf/bpf/*.c) with clang into OUT_DIR;
//! the crate embeds them with `include_bytes!`.
use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["xdpgen", "xdpsink"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf/common.h");
    for name in PROGRAMS {
        let src = format!("bpf/{name}.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.o"));
        let status = Command::new(&clang)
            .args([
                "-O2",
                "-g",
                "-Wall",
                "-Werror",
                "-target",
                "bpf",
                "-I/usr/include/x86_64-linux-gnu",
                "-c",
                &src,
                "-o",
            ])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {clang} to build {src} (install clang and libbpf-dev): {e}")
            });
        assert!(status.success(), "{clang} failed to build {src}");
    }
}

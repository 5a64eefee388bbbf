//! xdplane's perf lab: a traffic generator and sink built on XDP, side-by-side scenarios that
//! measure xdplane against the Linux kernel datapath on the same topology, and (in
//! `benches/`) criterion micro-benchmarks.
//!
//! - [`generator::Generator`]: an XDP program run with `BPF_PROG_TEST_RUN` in live-frame mode that
//!   writes UDP frames and redirects them to a veth (about 10 Mpps from one vCPU).
//! - [`sink::Sink`]: an XDP program that counts what arrives on an interface and drops it.
//! - [`scenarios::pod_pod`]: pod → pod on one node, Linux bridge vs xdplane.
//! - [`scenarios::remote_pod`]: pod → pod on another node over flannel-compatible VXLAN,
//!   the kernel's flannel datapath vs xdplane on both nodes (UDP packets per second and
//!   iperf3 TCP).
//! - [`scenarios::service`]: pod → ClusterIP → pod on another node, the kernel's flannel
//!   datapath with the iptables rules kube-proxy would write
//!   ([`xdplane_control::kubeproxy`]) vs xdplane, with 1 and 10,000 Services (established
//!   flows' packets per second, and new flows per second).
//! - [`cli::BenchCmd`]: the `xdplane bench …` subcommands.
//!
//! Everything runs in network namespaces the tools create and remove; it needs root.
//! `unsafe` is confined to [`sys`] (the raw `bpf()`, `setns`, affinity and signal calls) and
//! the `aya::Pod` impls of the map value types.
#![deny(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod cpu;
pub mod generator;
pub mod netns;
pub mod report;
pub mod scenarios;
pub mod sink;
pub mod sys;

//! The xdplane namespace lab: a small cluster in network namespaces on one machine.
//!
//! ```text
//!                        <lab>-fabric: br0
//!              s1 ─────────────┼───────────── s2 …
//!               │ veth                         │
//!   <lab>-server1: eth0 192.168.50.11/24   <lab>-server2: eth0 192.168.50.12/24
//!       xdplane run (AF_XDP on eth0 and every pod port)
//!        │ veth (made by xdplane-cni)
//!   <lab>-<pod>: eth0 10.244.1.x/24, `xdplane testpod serve`
//! ```
//!
//! - [`cli`]: `xdplane lab up|down|status|exec|probe|add-pod|del-pod|mode|sync|demo`
//!   ([`cli::LabCmd`], [`cli::run_lab`]).
//! - [`flannel`]: flannel's net-conf.json, modes and Node annotations, as the lab plays
//!   flanneld; [`apiserver`]: patching objects in the lab's manifest directory;
//!   [`kernel`]: kernel flannel nodes (flannel.1, cni0, the bridge CNI plugin), programmed
//!   like flanneld programs a node.
//! - [`testpod`]: `xdplane testpod serve|probe|flood` ([`testpod::TestpodCmd`],
//!   [`testpod::run_testpod`]), also usable as a library.
//! - [`lab`]: the operations behind the commands, for tests and benchmarks
//!   ([`lab::LabConfig`], [`lab::up`], [`lab::down`], [`lab::add_pod`], [`lab::probe`]).
//!
//! Guarantees: nothing is added to the root namespace except the `ip netns` entries; every
//! link lives in a lab namespace. Everything created is recorded in
//! `/run/xdplane-lab/<lab>/state.json` before or right after it is created, so `down`
//! removes a half-created lab too. `down` signals only processes it recorded, and only
//! while `/proc` shows the same start time and command line. Lab names have no `-`, so
//! `<lab>-*` names the namespaces of exactly one lab.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod cli;
pub mod cni;
pub mod demo;
pub mod flannel;
pub mod kernel;
pub mod lab;
pub mod manifests;
pub mod names;
pub mod netns;
pub mod procs;
pub mod services;
pub mod state;
pub mod term;
pub mod testpod;

pub use cli::{LabCmd, run_lab};
pub use testpod::{TestpodCmd, run_testpod};

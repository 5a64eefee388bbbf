//! The control side of xdplane: the project's own model of the cluster, the sources that
//! fill it (a manifest directory here; the Kubernetes API later), and the compiler that
//! turns it into a dataplane [`xdplane_pipeline::Snapshot`].
//!
//! Kubernetes types stop at the source boundary: everything past `manifest` uses [`model`].
#![forbid(unsafe_code)]

pub mod model;

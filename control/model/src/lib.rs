//! The control side of xdplane: the project's own model of the cluster, the sources that
//! fill it (a manifest directory here; the Kubernetes API later), and the compiler that
//! turns it into a dataplane [`xdplane_pipeline::Snapshot`].
//!
//! Kubernetes types stop at the source boundary: everything past [`manifest`] uses [`model`].
//!
//! - [`manifest::load_dir`]: a directory of manifests → [`manifest::LoadResult`] (the model,
//!   per-object errors, objects left to other sources).
//!   It also allocates missing clusterIPs and nodePorts as the API server would
//!   ([`manifest::allocate`]).
//! - [`schedule::lab_pods`]: the pods a lab runs for a model, placed on its nodes.
//! - [`endpoints::endpoint_slices`]: the EndpointSlices Kubernetes' controller would write
//!   for the model's Services, and [`endpoints::endpoint_slices_yaml`] to put them into a
//!   manifest directory.
//! - [`compile::compile`]: model + a node's local state → one [`xdplane_pipeline::Snapshot`].
//!
//! Guarantees: no function here panics on any input; loading, scheduling and compiling are
//! deterministic (same input, same output, on every machine).
#![forbid(unsafe_code)]

pub mod compile;
pub mod endpoints;
mod hash;
pub mod kubeproxy;
pub mod manifest;
pub mod model;
pub mod schedule;
pub mod validate;

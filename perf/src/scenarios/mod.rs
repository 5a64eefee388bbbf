pub(crate) mod common;
pub mod pod_pod;
pub mod remote_pod;
pub mod service;

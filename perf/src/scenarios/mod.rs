pub mod pod_pod;

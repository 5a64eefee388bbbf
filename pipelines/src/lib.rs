//! Packet processing stages and the tables they read.
//!
//! Packets arrive as a [`Batch`] of descriptors into frame memory ([`FrameMem`]); the
//! [`Pipeline`] runs every stage over the batch and leaves each packet with a final
//! [`Verdict`]. Stages read one immutable [`Snapshot`] for the whole batch, and the
//! [`FlowTable`] of NATed flows that every worker of the node shares (lock-free).
#![forbid(unsafe_code)]

pub mod batch;
pub mod drop;
pub mod pipeline;
pub mod snapshot;
pub mod stages;
pub mod tables;

pub use batch::{BATCH, Batch, Desc, FrameMem, IcmpErr, Meta, Next, PortId, VecFrames, Verdict};
pub use drop::DropReason;
pub use pipeline::{
    NEIGHBOUR_MISSES, NeighbourMisses, PRIVATE_FLOWS, Pipeline, PipelineConfig, stage_name,
};
pub use snapshot::{
    DEFAULT_SNAT_PORTS, LocalEndpoint, LocalEndpoints, NodeTables, PortConfig, PortKind, Route,
    RouteId, Snapshot,
};
pub use tables::conntrack::{FlowTable, FlowTableConfig};
pub use tables::{Fib, FibBuilder, Neighbours, Services};

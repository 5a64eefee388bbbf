//! Tables the stages read: built off the fast path, frozen, read-only on it — except
//! [`conntrack::FlowTable`], the flow table the workers share and write (lock-free).

pub mod conntrack;
pub mod fib;
pub mod maglev;
pub mod neighbours;
pub mod reference;
pub mod services;

pub use fib::{Fib, FibBuilder};
pub use neighbours::Neighbours;
pub use reference::RefLpm;
pub use services::{Backend, BackendSet, Frontend, FrontendKey, FrontendKind, Services};

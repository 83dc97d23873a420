//! Routing: which agent answers which conversation, and why.
//!
//! A pure, deterministic core with no I/O, no async and no clock reads: every function takes the
//! instant it should reason about. The service that feeds it events and persists its decisions
//! lives beside it (see `tenant-runtime/ROUTING.md` for the persistence seam).
//!
//! * [`model`]: the data (agents, waiting conversations, categories, settings).
//! * [`mod@categorize`]: which category a new conversation belongs to.
//! * [`engine`]: the allocation rules, [`engine::allocate`] over a snapshot and [`engine::pick`].
//! * [`explain`]: decisions and why they were taken.
//! * [`state`]: the event-driven state machine that runs allocations incrementally.
//! * [`naive`]: the scan-everything baseline, kept as the reference for tests and benchmarks.
//! * [`service`]: the allocator around the core (lease, inputs, atomic claims, presence).

pub mod categorize;
pub mod engine;
pub mod explain;
pub mod model;
pub mod naive;
pub mod service;
pub mod state;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use categorize::{Categorized, Inbound, MatchedBy, categorize};
pub use engine::{PickError, allocate, pick, transfer_skill_gaps, why_waiting};
pub use explain::{
    CandidateFacts, Decision, Exclusion, ExplainLevel, Explanation, Verdict, WinReason,
};
pub use model::*;
pub use state::{Arrival, ConversationStatus, Event, EventError, RoutingState};

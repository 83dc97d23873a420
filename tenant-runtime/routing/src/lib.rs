//! Routing: which agent answers which conversation, and why.
//!
//! A pure, deterministic core with no I/O, no async and no clock reads: every function takes the
//! instant it should reason about. It is a crate of its own so that this purity is enforced by
//! the compiler, not by review: it cannot link tokio, sqlx or axum. The runtime's
//! `routing` module is the service that feeds it events and persists its decisions (see
//! `tenant-runtime/ROUTING.md` for the persistence seam).
//!
//! * [`model`]: the data (agents, waiting conversations, categories, settings) and the
//!   vocabulary the runtime's API shares with the engine ([`ChannelType`], [`AgentStatus`],
//!   [`CategoryRule`]: one type each, used by the runtime too).
//! * [`mod@categorize`]: which category a new conversation belongs to.
//! * [`engine`]: the allocation rules, [`engine::allocate`] over a snapshot and [`engine::pick`].
//! * [`transfer`]: whether a named agent can take a transferred conversation now.
//! * [`explain`]: decisions and why they were taken.
//! * [`state`]: the event-driven state machine that runs allocations incrementally.
//! * [`naive`]: the scan-everything baseline, kept as the reference for tests and benchmarks.

pub mod categorize;
pub mod engine;
pub mod explain;
pub mod model;
pub mod naive;
pub mod state;
pub mod transfer;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use categorize::{Categorized, Inbound, MatchedBy, categorize};
pub use engine::{PickError, allocate, pick, why_waiting};
pub use explain::{
    CandidateFacts, Decision, Exclusion, ExplainLevel, Explanation, Verdict, WinReason,
};
pub use model::*;
pub use state::{Arrival, ConversationStatus, Event, EventError, RoutingState};
pub use transfer::{TransferFacts, TransferVerdict, decide_transfer, transfer_skill_gaps};

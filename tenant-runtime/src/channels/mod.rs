//! Channels through the Sinch Conversation API: webhook [`signature`] verification, callback
//! parsing ([`callbacks`]), channel [`rules`] for outbound messages, the API client ([`sinch`]),
//! the [`outbox`] sender, and a local [`simulator`] of the API for tests and the demo.

pub(crate) mod callbacks;
pub mod outbox;
pub mod rules;
pub mod signature;
pub mod simulator;
pub mod sinch;

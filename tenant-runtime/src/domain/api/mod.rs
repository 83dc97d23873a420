//! The API types: what the HTTP API sends and accepts, built by storage from its rows and by
//! the services, serialized by the routes. They live on the domain floor because every floor
//! above passes them along; storage's rows are separate `FromRow` structs that never appear in
//! the OpenAPI document. Types only one route builds (the Workspace's views, request bodies of a
//! single handler) stay beside their handler in `http/routes/`.

mod conversations;
mod directory;
mod privacy;
mod workspace;

pub use conversations::ContactIdentity;
pub(crate) use conversations::{Contact, Conversation, Message};
pub(crate) use directory::{Category, Invite, Skill, User, UserSkill};
pub use directory::{NewCategory, NewSkill, NewUser, SkillOption};
pub use privacy::ContactInput;
pub(crate) use privacy::{
    AnonymizeReport, ChainReport, ContactDetails, IdentityInput, SubjectData, normalize_phone,
};
pub use workspace::CategoryEdit;
pub(crate) use workspace::{ChannelHealth, DecisionRecord, Figures, Note, QueueItem};

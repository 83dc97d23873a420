//! The API types: what the HTTP API sends and accepts, built by storage from its rows and by
//! the services, serialized by the routes. They live on the domain floor because every floor
//! above passes them along; storage's rows are separate `FromRow` structs that never appear in
//! the OpenAPI document. Types only one route builds (the Workspace's views, request bodies of a
//! single handler) stay beside their handler in `http/routes/`.

mod conversations;
mod directory;
mod privacy;
mod workspace;

pub use conversations::{Contact, ContactIdentity, Conversation, Message};
pub use directory::{
    Category, Invite, NewCategory, NewSkill, NewUser, Skill, SkillOption, User, UserSkill,
};
pub use privacy::{
    AnonymizeReport, ChainReport, ContactDetails, ContactInput, IdentityInput, SubjectData,
    normalize_phone,
};
pub use workspace::{CategoryEdit, ChannelHealth, DecisionRecord, Figures, Note, QueueItem};

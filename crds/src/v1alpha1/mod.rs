//! `contact.dev/v1alpha1`: the first version of the ContactTenant API.
//!
//! Every field carries a `///` doc that becomes its description in the generated schema, so
//! `kubectl explain contacttenant.spec.<field>` tells users what we tell readers of this code.
//!
//! Validation lives in the schema as CEL rules (`x-kubernetes-validations`) with human messages, so
//! a bad object is refused at admission by the apiserver itself, before the operator sees it.
//! Rules that need more than CEL can express (a real IANA time zone, the existence of a referenced
//! Secret) are checked by the operator and reported as conditions.

mod spec;
mod status;

pub use spec::*;
pub use status::*;

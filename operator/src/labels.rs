//! Names of the labels, annotations and finalizer the operator writes: one place, so the
//! builders, the reconciler and the sweeper cannot disagree.

/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "contact-operator";
/// Finalizer that lets the operator detach data before a tenant disappears.
pub const FINALIZER: &str = "contact.dev/finalizer";

/// Label: the tenant (ContactTenant name) an object belongs to.
pub const TENANT: &str = "contact.dev/tenant";
/// Label: the component of the tenant (runtime, backup, data, ...).
pub const COMPONENT: &str = "contact.dev/component";
/// Label: marks objects holding tenant data that must survive deletion for the grace period.
pub const DATA: &str = "contact.dev/data";
/// Standard label: the managing tool.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Standard label: the application name.
pub const APP_NAME: &str = "app.kubernetes.io/name";
/// Standard label: the instance (tenant) name.
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";

/// Annotation: hash of the desired object last applied, to skip unchanged applies.
pub const SPEC_HASH: &str = "contact.dev/spec-hash";
/// Annotation on the tenant: `"true"` applies restart-requiring changes outside the window.
pub const APPLY_NOW: &str = "contact.dev/apply-now";
/// Annotation on detached data: when its tenant was deleted (RFC 3339).
pub const DELETED_AT: &str = "contact.dev/tenant-deleted-at";
/// Annotation on detached data: when the sweeper may purge it (RFC 3339).
pub const PURGE_AFTER: &str = "contact.dev/purge-after";
/// Annotation on the workload: the database kind it was built for (to detect database changes).
pub const DATABASE_KIND: &str = "contact.dev/database";

/// The runtime's HTTP port (API, UI, webhooks, probes).
pub const RUNTIME_PORT: i32 = 8080;

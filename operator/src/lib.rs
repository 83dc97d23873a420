//! The Contact operator: turns each `ContactTenant` into a running, isolated tenant and keeps it so.

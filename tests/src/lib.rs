//! Harnesses that start real parts for tests: a kube-apiserver with etcd, and PostgreSQL.
pub mod postgres;

//! Leader election (filled in with the run module).

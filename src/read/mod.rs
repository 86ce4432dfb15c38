//! The public state read side: the immutable snapshot of everything the public sees, its
//! search indexes and derived availability.

pub mod live;
pub mod search;
pub mod snapshot;

//! Snapshot → bytes for public URLs: HTML pages from the templates, Atom and iCalendar feeds,
//! CAP alerts.

pub mod cap;
pub mod feeds;
pub mod paths;
pub mod render;

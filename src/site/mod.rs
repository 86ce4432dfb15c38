//! Snapshot → bytes for public URLs: HTML pages from the templates, Atom and iCalendar feeds.

pub mod feeds;
pub mod paths;
pub mod render;

//! The route handlers, by concern.

pub(crate) mod event_data;
pub(crate) mod events;
pub(crate) mod integrations;
pub(crate) mod logs;

//! Delivery to targets: one module per target type behind [`crate::ports::Deliverer`].

pub mod guard;

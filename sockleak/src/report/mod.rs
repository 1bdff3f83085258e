//! Reports: the JSON contract, how it is built, and how text mode shows it.

pub mod build;
pub mod model;
pub mod names;
pub mod text;

//! Reports: built from the tracker's state and the facts gathered for them by a pure function
//! (`build`, in steps: the socket `walk`, `suspects`, `failures`, `limits`, `time_wait`, `unwinding`), and
//! shown as text. The model they fill is `crate::model`; the facts are gathered by the session
//! (`trace::facts`).

pub mod build;
pub mod facts;
pub mod failures;
pub mod limits;
pub mod suspects;
pub mod text;
pub mod time_wait;
pub mod unwinding;
pub mod walk;

#[cfg(test)]
mod tests;

use thiserror::Error;

/// Why an object cannot be injected: `at` is the field path or annotation at fault.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{at}: {message}")]
pub struct InjectError {
    pub at: String,
    pub message: String,
}

impl InjectError {
    pub(crate) fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        InjectError { at: at.into(), message: message.into() }
    }
}

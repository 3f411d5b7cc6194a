//! Why an upstream request failed, mapped to what Envoy shows: status, body, response flag.

/// The failure of one upstream attempt or of the whole forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("circuit breaker overflow")]
    Overflow,
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    #[error("connect failure: {0}")]
    ConnectFailure(String),
    #[error("connection reset: {0}")]
    Reset(String),
    #[error("upstream request timeout")]
    Timeout,
    #[error("upstream per-try timeout")]
    PerTryTimeout,
}

impl UpstreamError {
    /// Envoy's response flag (`%RESPONSE_FLAGS%`).
    pub fn response_flag(&self) -> &'static str {
        match self {
            UpstreamError::Overflow => "UO",
            UpstreamError::NoHealthyUpstream => "UH",
            UpstreamError::ConnectFailure(_) => "UF",
            UpstreamError::Reset(_) => "UC",
            UpstreamError::Timeout | UpstreamError::PerTryTimeout => "UT",
        }
    }

    pub fn status(&self) -> http::StatusCode {
        match self {
            UpstreamError::Timeout | UpstreamError::PerTryTimeout => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Envoy's reset reason wording for the local reply body.
    pub fn reset_reason(&self) -> String {
        match self {
            UpstreamError::Overflow => "overflow".into(),
            // The transport failure reason goes to %UPSTREAM_TRANSPORT_FAILURE_REASON%, not the body.
            UpstreamError::ConnectFailure(why) if why.contains("timeout") => "connection timeout".into(),
            UpstreamError::ConnectFailure(_) => "remote connection failure".into(),
            UpstreamError::Reset(_) => "connection termination".into(),
            _ => String::new(),
        }
    }

    /// The local reply body Envoy sends for this failure.
    pub fn body(&self, retried: bool) -> String {
        match self {
            UpstreamError::NoHealthyUpstream => "no healthy upstream".into(),
            UpstreamError::Timeout | UpstreamError::PerTryTimeout => "upstream request timeout".into(),
            _ if retried => format!(
                "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: {}",
                self.reset_reason()
            ),
            _ => format!("upstream connect error or disconnect/reset before headers. reset reason: {}", self.reset_reason()),
        }
    }
}

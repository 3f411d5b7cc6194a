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
    /// The upstream's response broke HTTP (a head or framing its codec refuses): Envoy's 502
    /// with `UPE`, never a half-parsed response.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream request timeout")]
    Timeout,
    #[error("upstream per-try timeout")]
    PerTryTimeout,
}

impl UpstreamError {
    /// A failed exchange with an upstream, classified: a response hyper could not parse is the
    /// upstream's protocol error, anything else a reset.
    pub fn from_exchange(e: hyper::Error) -> UpstreamError {
        if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            UpstreamError::Protocol(e.to_string())
        } else {
            UpstreamError::Reset(e.to_string())
        }
    }

    /// Envoy's response flag (`%RESPONSE_FLAGS%`).
    pub fn response_flag(&self) -> &'static str {
        match self {
            UpstreamError::Overflow => "UO",
            UpstreamError::NoHealthyUpstream => "UH",
            UpstreamError::ConnectFailure(_) => "UF",
            UpstreamError::Reset(_) => "UC",
            UpstreamError::Protocol(_) => "UPE",
            UpstreamError::Timeout | UpstreamError::PerTryTimeout => "UT",
        }
    }

    pub fn status(&self) -> http::StatusCode {
        match self {
            UpstreamError::Timeout | UpstreamError::PerTryTimeout => http::StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Protocol(_) => http::StatusCode::BAD_GATEWAY,
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
            UpstreamError::Protocol(_) => "protocol error".into(),
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

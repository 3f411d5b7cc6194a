//! Istio's protocol selection: port name `<protocol>[-<suffix>]`, overridden by `appProtocol`;
//! anything else is sniffed. `http2foo` names no protocol, exactly as in Istio.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    HttpProxy,
    Https,
    Tcp,
    Tls,
    Mongo,
    Redis,
    Mysql,
    Udp,
    /// No protocol named: the proxy sniffs the first bytes.
    Auto,
}

impl Protocol {
    /// Matches a protocol name case-insensitively (`HTTP`, `grpc-web`, …).
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http_proxy" => Protocol::HttpProxy,
            "https" => Protocol::Https,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// A Kubernetes Service port: `appProtocol` wins when set (an unrecognised one means
    /// sniffing, even if the name says `http`), then the name's prefix before the first `-`.
    pub fn for_service_port(name: Option<&str>, app_protocol: Option<&str>, l4: Option<&str>, port: u32) -> Protocol {
        if l4.is_some_and(|p| p.eq_ignore_ascii_case("UDP")) {
            return Protocol::Udp;
        }
        if let Some(ap) = app_protocol {
            return match ap {
                "kubernetes.io/h2c" => Protocol::Http2,
                "kubernetes.io/ws" => Protocol::Http,
                "kubernetes.io/wss" => Protocol::Https,
                other => Protocol::parse(other).unwrap_or(Protocol::Auto),
            };
        }
        let name = name.unwrap_or_default();
        if name.len() >= 8 && name[..8].eq_ignore_ascii_case("grpc-web") {
            return Protocol::GrpcWeb;
        }
        let prefix = name.split('-').next().unwrap_or_default();
        match Protocol::parse(prefix) {
            Some(p) => p,
            // Istio treats a few well-known server-first ports as TCP rather than sniffing them.
            None if matches!(port, 25 | 53 | 3306 | 27017) => Protocol::Tcp,
            None => Protocol::Auto,
        }
    }

    /// Routed by the HTTP connection manager.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb | Protocol::HttpProxy)
    }

    /// Upstream connections should speak HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Udp => "UDP",
            Protocol::Auto => "auto (sniffed)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol as P;

    #[test]
    fn port_names_select_protocols_as_istio_does() {
        let sel = |n: &str| P::for_service_port(Some(n), None, None, 9080);
        assert_eq!(sel("http"), P::Http);
        assert_eq!(sel("http-web"), P::Http);
        assert_eq!(sel("HTTP2-x"), P::Http2);
        assert_eq!(sel("grpc-web"), P::GrpcWeb);
        assert_eq!(sel("grpc-webfoo"), P::GrpcWeb, "Istio's grpc-web check is a bare prefix");
        assert_eq!(sel("http2foo"), P::Auto, "http2foo names no protocol");
        assert_eq!(sel("httpfoo"), P::Auto);
        assert_eq!(sel("tcp-db"), P::Tcp);
        assert_eq!(sel(""), P::Auto);
        assert_eq!(P::for_service_port(Some("web"), None, None, 3306), P::Tcp);
        assert_eq!(P::for_service_port(Some("http"), Some("kubernetes.io/h2c"), None, 80), P::Http2);
        assert_eq!(P::for_service_port(Some("http"), Some("custom"), None, 80), P::Auto, "appProtocol replaces the name");
        assert_eq!(P::for_service_port(Some("tcp"), Some("grpc"), None, 80), P::Grpc);
    }
}

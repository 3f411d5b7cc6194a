
0.0.0.0_443
0.0.0.0»ý
Zweb.example.comÎ
envoy.filters.network.tcp_proxy"ª
Jtype.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\
,outbound|8443||web.default.svc.cluster.local,outbound|8443||web.default.svc.cluster.local:tls.443.web.example.comJ}
$envoy.filters.listener.tls_inspectorU
Stype.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
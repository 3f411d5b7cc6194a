
0.0.0.0_3306
0.0.0.0êÛÎ
envoy.filters.network.tcp_proxy"ª
Jtype.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\
,outbound|8080||web.default.svc.cluster.local,outbound|8080||web.default.svc.cluster.local:tcp.3306
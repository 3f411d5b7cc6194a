
virtualOutbound
0.0.0.0™uº
B™u•
envoy.filters.network.tcp_proxy"r
Jtype.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy$
BlackHoleClusterBlackHoleCluster:virtualOutbound-blackhole¶•
envoy.filters.network.tcp_proxy"r
Jtype.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy$
BlackHoleClusterBlackHoleCluster:virtualOutbound-catchall-tcp"€
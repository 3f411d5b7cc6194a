
.outbound|9090|v2|web.default.svc.cluster.local


10.2.0.2‚G
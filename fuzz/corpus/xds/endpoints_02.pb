
.outbound|9090|v1|web.default.svc.cluster.local


10.2.0.1‚G
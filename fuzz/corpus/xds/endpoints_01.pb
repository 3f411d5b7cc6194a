
,outbound|7070||web.default.svc.cluster.local*


10.2.0.1ž7


10.2.0.2ž7

,outbound|5432||web.default.svc.cluster.local*


10.2.0.1¸*


10.2.0.2¸*
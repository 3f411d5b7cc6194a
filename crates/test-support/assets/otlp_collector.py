#!/usr/bin/env python3
"""A real OTLP/gRPC collector (grpcio and OpenTelemetry's own protobuf definitions, PyPI
`opentelemetry-proto`) for weft's tests.

  otlp_collector.py PORT     serves opentelemetry.proto.collector.trace.v1.TraceService and
                             ...logs.v1.LogsService on 127.0.0.1:PORT; prints "ready", then one
                             JSON line per span received:
                             {"service", "name", "kind", "trace", "parent", "attributes"}
                             and per log record: {"log", "attributes", "resource"}
"""
import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for rs in request.resource_spans:
            service = [kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"]
            for ss in rs.scope_spans:
                for s in ss.spans:
                    print(json.dumps({
                        "service": service,
                        "name": s.name,
                        "kind": s.kind,
                        "trace": s.trace_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "attributes": {kv.key: kv.value.string_value for kv in s.attributes},
                    }), flush=True)
        return trace_service_pb2.ExportTraceServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):
        for rl in request.resource_logs:
            resource = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    print(json.dumps({
                        "log": r.body.string_value,
                        "attributes": {kv.key: kv.value.string_value for kv in r.attributes},
                        "resource": resource,
                    }), flush=True)
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    server.add_insecure_port(f"127.0.0.1:{int(sys.argv[1])}")
    server.start()
    print("ready", flush=True)
    # Ends with the test, which kills it; bounded so a forgotten one cannot linger for long.
    server.wait_for_termination(timeout=600)


if __name__ == "__main__":
    main()

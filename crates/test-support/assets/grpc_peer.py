#!/usr/bin/env python3
"""A real gRPC peer (grpcio) for weft's tests, with no generated code.

  grpc_peer.py server PORT          serves weft.test.Echo on 127.0.0.1:PORT
  grpc_peer.py client TARGET        runs the four call shapes against TARGET and prints JSON

Messages are raw bytes. The service answers:
  Unary(b)            -> b"unary:" + b
  ServerStream(b)     -> three messages b"<i>:" + b
  ClientStream(bs)    -> b"|".join(bs)
  Bidi(bs)            -> b"bidi:" + each b
  Fail(b)             -> status NOT_FOUND with the request as detail
"""
import json
import sys
from concurrent import futures

import grpc

ident = lambda b: b
SERVICE = "weft.test.Echo"


def serve(port):
    def unary(req, ctx):
        md = dict(ctx.invocation_metadata())
        ctx.set_trailing_metadata((("x-trailer", "unary-done"),))
        return b"unary:" + req + (b" via " + md["x-hop"].encode() if "x-hop" in md else b"")

    def server_stream(req, ctx):
        for i in range(3):
            yield str(i).encode() + b":" + req

    def client_stream(it, ctx):
        return b"|".join(it)

    def bidi(it, ctx):
        for b in it:
            yield b"bidi:" + b

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "missing " + req.decode())

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def client(target):
    out = {}
    with grpc.insecure_channel(target) as ch:
        m = lambda kind, name: getattr(ch, kind)(f"/{SERVICE}/{name}", request_serializer=ident, response_deserializer=ident)
        resp, call = m("unary_unary", "Unary").with_call(b"hello", timeout=10)
        out["unary"] = resp.decode()
        out["trailer"] = dict(call.trailing_metadata()).get("x-trailer")
        out["server_stream"] = [r.decode() for r in m("unary_stream", "ServerStream")(b"s", timeout=10)]
        out["client_stream"] = m("stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=10).decode()
        out["bidi"] = [r.decode() for r in m("stream_stream", "Bidi")(iter([b"x", b"y"]), timeout=10)]
        try:
            m("unary_unary", "Fail")(b"thing", timeout=10)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            out["fail"] = [e.code().name, e.details()]
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(sys.argv[2])

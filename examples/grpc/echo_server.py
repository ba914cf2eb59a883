"""The example's gRPC service (the four call kinds) on 127.0.0.1:50051, and a client.

    python echo_server.py serve
    python echo_server.py call 127.0.0.1:8090      # through the gateway
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
protoc.main(["protoc", f"-I{HERE}", f"--python_out={HERE}", f"--grpc_python_out={HERE}",
             str(HERE / "echo.proto")])
sys.path.insert(0, str(HERE))
import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402


class Echo(echo_pb2_grpc.EchoServicer):  # type: ignore[misc]
    def Unary(self, request: Any, context: grpc.ServicerContext) -> Any:
        return echo_pb2.Note(text=request.text.upper(), count=request.count + 1)

    def ServerStream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        for i in range(request.count):
            yield echo_pb2.Note(text=f"{request.text}-{i}", count=i)

    def ClientStream(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        notes = list(requests)
        return echo_pb2.Note(text="".join(n.text for n in notes), count=len(notes))

    def Bidi(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        for note in requests:
            yield echo_pb2.Note(text=note.text[::-1], count=note.count)


def serve(address: str = "127.0.0.1:50051") -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_insecure_port(address)
    server.start()
    print(f"echo service on {address}")
    server.wait_for_termination()


def call(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        print("unary:", stub.Unary(echo_pb2.Note(text="hello", count=41)))
        print("server stream:", [n.text for n in stub.ServerStream(
            echo_pb2.Note(text="n", count=3))])
        print("client stream:", stub.ClientStream(iter(echo_pb2.Note(text=c) for c in "abc")))
        print("bidi:", [n.text for n in stub.Bidi(iter(echo_pb2.Note(text=t)
                                                        for t in ("one", "two")))])


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    else:
        call(sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:8090")

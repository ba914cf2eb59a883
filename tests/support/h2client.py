"""A blocking HTTP/2 client over a real socket for the tests: the ``h2`` library frames and
parses, every read has a deadline. ``send_raw`` writes bytes the client's own state machine
never produced (attack frames built with ``hyperframe``); ``raw_headers`` sends fields as
given (no lower-casing, no validation: malformed requests).

Unlike the ``h2`` library's own connection, the client reads on after a GOAWAY, as real
clients do (RFC 9113 §6.8: the streams it opened up to the GOAWAY's last stream id are still
answered; h2 would stop at the GOAWAY and raise on the next frame); every GOAWAY is kept in
``goaways``."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame


class _ReadingOnConnection(h2.connection.H2Connection):
    """h2's connection, except that a GOAWAY received is only reported."""

    def _receive_goaway_frame(self, frame: GoAwayFrame
                              ) -> tuple[list[Frame], list[h2.events.Event]]:
        event = h2.events.ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # the error code of a RST_STREAM from the gateway

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class H2Client:
    def __init__(self, port: int, *, context: ssl.SSLContext | None = None,
                 server_name: str | None = None, timeout: float = 10.0,
                 window: int | None = None, auto_ack: bool = True,
                 raw_headers: bool = False) -> None:
        self.timeout = timeout
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if context is not None:
            context.set_alpn_protocols(["h2", "http/1.1"])
            sock = context.wrap_socket(sock, server_hostname=server_name)
        self.sock = sock
        self.h2 = _ReadingOnConnection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=not raw_headers,
            normalize_outbound_headers=not raw_headers))
        if window is not None:
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.auto_ack = auto_ack  # acknowledge received data (open the windows) at once
        self.h2.initiate_connection()
        self.answers: dict[int, Answer] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None  # the first
        self.goaways: list[h2.events.ConnectionTerminated] = []
        self.closed = False
        self.flush()

    @property
    def alpn(self) -> str | None:
        return self.sock.selected_alpn_protocol() if isinstance(self.sock, ssl.SSLSocket) \
            else None

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, *, authority: str = "test.local",
                headers: list[tuple[str, str]] | None = None, body: bytes | None = None,
                end: bool = True) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"http"),
                  (b":authority", authority.encode()), (b":path", path.encode())]
        fields += [(n.encode(), v.encode()) for n, v in headers or []]
        self.answers[stream_id] = Answer()
        self.h2.send_headers(stream_id, fields, end_stream=end and body is None)
        if body is not None:
            self.send_data(stream_id, body, end=end)
        self.flush()
        return stream_id

    def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """``data`` as the windows allow (reading answers while waiting for them)."""
        while data:
            window = min(self.h2.local_flow_control_window(stream_id),
                         self.h2.max_outbound_frame_size)
            if window <= 0:
                self.read_once()
                continue
            self.h2.send_data(stream_id, data[:window])
            data = data[window:]
            self.flush()
        if end:
            self.h2.end_stream(stream_id)
        self.flush()

    def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id)
        self.flush()

    def read_once(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            raise ConnectionError("the gateway closed the connection")
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            raise
        for event in events:
            self._event(event)
        self.flush()

    def _event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        answer = self.answers.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and answer is not None:
            answer.headers = list(event.headers or [])
            answer.status = int(dict(answer.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived) and answer is not None:
            answer.body += event.data or b""
            if self.auto_ack and event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.TrailersReceived) and answer is not None:
            answer.trailers = list(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded) and answer is not None:
            answer.ended = True
        elif isinstance(event, h2.events.StreamReset) and answer is not None:
            answer.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaways.append(event)
            if self.goaway is None:
                self.goaway = event

    def wait(self, stream_id: int) -> Answer:
        """The complete answer on ``stream_id`` (ended or reset)."""
        answer = self.answers[stream_id]
        deadline = time.monotonic() + self.timeout
        while not (answer.ended or answer.reset is not None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer on stream {stream_id}: {answer}")
            self.read_once()
        return answer

    def wait_goaway(self) -> h2.events.ConnectionTerminated:
        deadline = time.monotonic() + self.timeout
        while self.goaway is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no GOAWAY")
            try:
                self.read_once()
            except (ConnectionError, h2.exceptions.ProtocolError):
                break
        assert self.goaway is not None, "the connection closed without a GOAWAY"
        return self.goaway

    def get(self, path: str, **kwargs: object) -> Answer:
        return self.wait(self.request("GET", path, **kwargs))  # type: ignore[arg-type]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The labelling server: a JSON API and one page (static/index.html), on the standard library's http.server.

GET  /                          the page
GET  /api/state                 mode, video, frame count and size, names or behaviours, the work
GET  /api/frame?frame=F[&key=K][&track=T]   frame F as JPEG, masks drawn, mask K or track T highlighted
GET  /api/instances?frame=F     the masks of frame F (key, track, box)
POST /api/identity/assign       {"key": K, "identity": i | null}: label (or unlabel) mask K, saved at once
POST /api/behaviour/bout        {"track_id": T, "start": F1, "end": F2, "behaviour": B}: add a bout, saved at once
POST /api/behaviour/delete      {"id": N}: delete a bout, saved at once
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from sipec.label.frames import FrameSource, draw, jpeg
from sipec.label.results import Instance, Results, sample_instances
from sipec.label.store import BehaviourStore, IdentityStore, link_video

log = logging.getLogger("sipec.label")

IDENTITY = "identity"
BEHAVIOUR = "behaviour"


class LabelApp:
    """The state of one labelling session (thread-safe: one lock around every change and read)."""

    def __init__(self, video: Path, results: Results, out_dir: Path, mode: str, *, num_frames: int,
                 size: tuple[int, int], names: list[str] | None = None, behaviours: list[str] | None = None,
                 count: int = 100, sample: str = "regular", seed: int = 0) -> None:
        self.mode = mode
        self.results = results
        self.out_dir = out_dir
        self.num_frames = num_frames
        self.size = size
        self.lock = threading.Lock()
        self.video_name = link_video(out_dir, video)
        self.frames = FrameSource(out_dir / self.video_name)
        self.identity: IdentityStore | None = None
        self.behaviour: BehaviourStore | None = None
        if mode == IDENTITY:
            self.identity = IdentityStore(out_dir, self.video_name, names or [], results)
            self.queue: list[Instance] = sample_instances(results, count, sample, seed, num_frames)
        elif mode == BEHAVIOUR:
            self.behaviour = BehaviourStore(out_dir, self.video_name, behaviours or [], results)
            self.queue = []
        else:
            raise ValueError(f"mode must be {IDENTITY} or {BEHAVIOUR}, not {mode!r}")

    # ------------------------------------------------------------------ views
    def state(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {"mode": self.mode, "video": self.video_name, "num_frames": self.num_frames,
                                   "width": self.size[0], "height": self.size[1], "out": str(self.out_dir)}
            if self.identity is not None:
                out["names"] = self.identity.names
                out["items"] = [self._item(i) for i in self.queue]
                out["labelled"] = self._labelled_in_queue()
            if self.behaviour is not None:
                out.update(self._behaviour_view())
            return out

    def _item(self, inst: Instance) -> dict[str, Any]:
        assert self.identity is not None
        return {"key": inst.key, "frame": inst.frame, "track_id": inst.track_id,
                "identity": self.identity.labels.get(inst.key)}

    def _labelled_in_queue(self) -> int:
        assert self.identity is not None
        return sum(1 for i in self.queue if i.key in self.identity.labels)

    def _behaviour_view(self) -> dict[str, Any]:
        b = self.behaviour
        assert b is not None
        return {"behaviours": b.behaviours,
                "tracks": [{"id": t, "name": b.track_names[t], "first": fr[0], "last": fr[-1], "frames": len(fr)}
                           for t, fr in sorted(b.tracks.items())],
                "bouts": [vars(x) for x in b.bouts]}

    def instances(self, frame: int) -> list[dict[str, Any]]:
        return [{"key": i.key, "track_id": i.track_id, "box": list(i.box), "has_mask": i.rle is not None}
                for i in self.results.instances(frame)]

    def frame_jpeg(self, frame: int, key: str | None = None, track: int | None = None) -> bytes:
        if not 0 <= frame < max(self.num_frames, 1):
            raise ValueError(f"frame {frame} outside 0..{self.num_frames - 1}")
        image = self.frames.frame(frame)
        instances = self.results.instances(frame)
        with self.lock:
            labels: dict[str, str] = {}
            if self.identity is not None:
                labels = {i.key: self.identity.names[self.identity.labels[i.key]] for i in instances
                          if i.key in self.identity.labels}
            if self.behaviour is not None:
                at = self.behaviour.frame_labels()
                for i in instances:
                    name = self.behaviour.track_names.get(i.track_id, f"track_{i.track_id}")
                    beh = at.get((i.track_id, frame))
                    labels[i.key] = f"{name}: {beh}" if beh else name
        return jpeg(draw(image, instances, {key} if key else None, labels,
                         {track} if track is not None else None))

    # ------------------------------------------------------------------ changes
    def assign(self, key: str, identity: int | None) -> dict[str, Any]:
        if self.identity is None:
            raise ValueError("not in identity mode")
        with self.lock:
            self.identity.assign(key, identity)
            inst = self.results.get(key)
            assert inst is not None
            return {"item": self._item(inst), "labelled": self._labelled_in_queue()}

    def add_bout(self, track_id: int, start: int, end: int, behaviour: str) -> dict[str, Any]:
        if self.behaviour is None:
            raise ValueError("not in behaviour mode")
        with self.lock:
            bout = self.behaviour.add(track_id, start, end, behaviour)
            return {"bout": vars(bout), **self._behaviour_view()}

    def delete_bout(self, bout_id: int) -> dict[str, Any]:
        if self.behaviour is None:
            raise ValueError("not in behaviour mode")
        with self.lock:
            self.behaviour.delete(bout_id)
            return self._behaviour_view()

    def close(self) -> None:
        self.frames.close()


def page() -> bytes:
    """The page; FileNotFoundError saying so when the installation lacks it (package data not installed)."""
    try:
        return resources.files("sipec.label").joinpath("static/index.html").read_bytes()
    except (FileNotFoundError, OSError) as exc:
        raise FileNotFoundError("sipec/label/static/index.html is missing from this installation (the package "
                                "was installed without its data files)") from exc


def make_handler(app: LabelApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sipec-label"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        timeout = 30  # seconds a client may take to send its request

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page no longer wants it (e.g. a frame replaced by the next one before it arrived)

        def _json(self, obj: Any, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

        def _error(self, status: int, message: str) -> None:
            self._json({"error": message}, status)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                if url.path in ("/", "/index.html"):
                    self._send(200, page(), "text/html; charset=utf-8")
                elif url.path == "/api/state":
                    self._json(app.state())
                elif url.path == "/api/instances":
                    self._json(app.instances(int(q["frame"])))
                elif url.path == "/api/frame":
                    track = int(q["track"]) if q.get("track") not in (None, "") else None
                    self._send(200, app.frame_jpeg(int(q["frame"]), q.get("key") or None, track), "image/jpeg")
                elif url.path == "/favicon.ico":
                    self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
                else:
                    self._error(404, f"no such page: {url.path}")
            except (KeyError, ValueError) as exc:
                self._error(400, str(exc))
            except Exception as exc:  # keep serving; the page shows the message
                log.exception("GET %s failed", self.path)
                self._error(500, f"{type(exc).__name__}: {exc}")

        def do_POST(self) -> None:
            url = urlparse(self.path)
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request body must be a JSON object")
                if url.path == "/api/identity/assign":
                    ident = body.get("identity")
                    self._json(app.assign(str(body["key"]), None if ident is None else int(ident)))
                elif url.path == "/api/behaviour/bout":
                    self._json(app.add_bout(int(body["track_id"]), int(body["start"]), int(body["end"]),
                                            str(body["behaviour"])))
                elif url.path == "/api/behaviour/delete":
                    self._json(app.delete_bout(int(body["id"])))
                else:
                    self._error(404, f"no such API: {url.path}")
            except KeyError as exc:
                self._error(400, f"missing or unknown {exc}")
            except (ValueError, TypeError) as exc:
                self._error(400, str(exc))
            except Exception as exc:
                log.exception("POST %s failed", self.path)
                self._error(500, f"{type(exc).__name__}: {exc}")

    return Handler


def make_server(app: LabelApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(app))
    # request threads are joined by server_close(): none is still drawing or decoding when the process exits
    server.daemon_threads = False
    server.block_on_close = True
    return server

"""A TEST DOUBLE of the Kubernetes API server: only the endpoints gpu-gateway's controller uses.

No kube-apiserver can be installed on our CI machines, so the controller's tests run the
real kubernetes client against this small HTTP server on loopback. It answers in the API
server's shapes (PodList / NodeList with `metadata.resourceVersion` and `continue`, watch
events as JSON lines, `Status` objects for errors, Lease optimistic concurrency):

- `GET /api/v1/pods` (list with `limit`/`continue`; `watch=true&resourceVersion=N`, with
  410 Expired for a compacted version and BOOKMARK events when asked);
- `PATCH /api/v1/namespaces/NS/pods/NAME` (JSON patch, with `test` operations, and merge patch);
- `GET /api/v1/nodes`; `POST /api/v1/namespaces/NS/events`;
- `GET /apis/GROUP/v1/RESOURCE` and `GET /api/v1/RESOURCE` (every object of a workload kind, with
  `limit`/`continue`) for the kinds `add_workload` served; any other kind answers 404, as a
  kind whose CRD is not installed does; `GET` of one workload by namespace and name;
- `GET|POST|PUT /apis/coordination.k8s.io/v1/namespaces/NS/leases[/NAME]`.

Connections are kept alive (HTTP/1.1) as the API server keeps them, and a paged list is one
snapshot of the pods' names; `requests`, `authorizations` and `connections` record what it saw.
The scheduler benchmark runs it in a process of its own (benchmarks/api_double.py).

It is not a Kubernetes: no admission, no scheduling, no validation beyond what the tests need
(a scheduling gate can only be removed, never added, on update, as the real server enforces).
The e2e suite (tests/e2e) runs the controller against a real cluster.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonpatch
import orjson


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _copy(obj: Any) -> Any:
    """A deep copy of a JSON object (several times faster than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(obj))


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class FakeApiServer:
    """State and HTTP front of the double. Thread-safe; start() binds 127.0.0.1 on a free port."""

    def __init__(self, *, keep_alive: bool = True) -> None:
        self.keep_alive = keep_alive
        self.lock = threading.Condition()
        self.rv = 100
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.oldest = 100
        self.nodes: list[dict[str, Any]] = []
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.webhook_configurations: dict[tuple[str, str], dict[str, Any]] = {}
        self.workloads: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        """(group, resource, namespace, name) -> object, for GETs of workloads other than pods."""
        self.served: set[tuple[str, str]] = set()
        """(group, resource) of the workload kinds listed; any other answers 404 (no CRD)."""
        """(resource, name) -> object; resource validatingwebhookconfigurations or mutatingwebhookconfigurations."""
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []
        """The Authorization header of each request, in the order of `requests`."""
        self.connections = 0
        """Connections accepted so far."""
        self.listings: dict[int, list[tuple[str, str]]] = {}
        """The names of the last few paged lists, by the resourceVersion of their first page."""
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ test controls

    def _bump(self, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, kind, _copy(obj)))
        self.lock.notify_all()

    def add_pod(self, pod: dict[str, Any], phase: str = "Pending") -> None:
        with self.lock:
            pod = copy.deepcopy(pod)
            meta = pod.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", "2026-11-26T05:00:00Z")
            pod.setdefault("status", {"phase": phase})
            pod.setdefault("apiVersion", "v1")
            pod.setdefault("kind", "Pod")
            self.pods[(meta["namespace"], meta["name"])] = pod
            self._bump("ADDED", pod)

    def set_phase(self, namespace: str, name: str, phase: str) -> None:
        with self.lock:
            pod = self.pods[(namespace, name)]
            pod["status"]["phase"] = phase
            self._bump("MODIFIED", pod)

    def delete_pod(self, namespace: str, name: str, *, seen: bool = True) -> None:
        """Delete a pod; `seen=False` drops it with no watch event (a DELETE the controller missed)."""
        with self.lock:
            pod = self.pods.pop((namespace, name))
            if seen:
                self._bump("DELETED", pod)

    def compact(self) -> None:
        """Forget the watch history: an older resourceVersion now answers 410 Expired."""
        with self.lock:
            self.history.clear()
            self.rv += 1
            self.oldest = self.rv

    def add_node(self, name: str, gpus: int, *, unschedulable: bool = False) -> None:
        with self.lock:
            self.nodes.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": str(self.rv)},
                "spec": {"unschedulable": True} if unschedulable else {},
                "status": {"allocatable": {"cpu": "96", "memory": "1056Gi", "nvidia.com/gpu": str(gpus)},
                           "capacity": {"cpu": "96", "memory": "1056Gi", "nvidia.com/gpu": str(gpus)}},
            })

    def add_workload(self, group: str, resource: str, obj: dict[str, Any]) -> None:
        """An object of a workload kind, which the double then lists (`served`)."""
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            self.workloads[(group, resource, meta["namespace"], meta["name"])] = obj
            self.served.add((group, resource))

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.pods[(namespace, name)])

    # ------------------------------------------------------------ HTTP

    def start(self) -> str:
        double = self

        class Handler(BaseHTTPRequestHandler):
            # Connections are kept alive, as the API server keeps them (a watch closes its own);
            # `keep_alive=False` answers HTTP/1.0, one request per connection.
            protocol_version = "HTTP/1.1" if double.keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = True
            wbufsize = -1  # an answer's headers and body leave in one write (flushed after each request)

            def setup(self) -> None:
                super().setup()
                with double.lock:
                    double.connections += 1

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else orjson.dumps(body)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                return json.loads(self.raw_body or b"null")

            def _route(self, method: str) -> None:
                # The whole body is read first, so that the connection is ready for the next request.
                self.raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                parts = [p for p in url.path.split("/") if p]
                with double.lock:
                    double.requests.append((method, self.path))
                    double.authorizations.append(self.headers.get("Authorization") or "")
                with contextlib.suppress(BrokenPipeError):
                    double.handle(self, method, parts, query)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_PATCH(self) -> None:
                self._route("PATCH")

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # clients open many connections at once

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], ConnectionError):  # a client closing its kept connection
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def write_kubeconfig(self, path: Any) -> Any:
        """A kubeconfig at `path` (a pathlib.Path) that reaches this double, for a process of its own."""
        assert self.server is not None, "start() the double first"
        host, port = self.server.server_address[:2]
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": f"http://{host}:{port}"}}],
            "users": [{"name": "gateway", "user": {"token": "not-checked-by-the-double"}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "gateway"}}],
        }))
        return path

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def handle(self, h: Any, method: str, parts: list[str], query: dict[str, str]) -> None:
        if parts == ["api", "v1", "pods"] and method == "GET":
            if query.get("watch") in ("true", "1"):
                return self._watch(h, query)
            return self._list_pods(h, query)
        if parts == ["api", "v1", "nodes"] and method == "GET":
            with self.lock:
                return h._send(200, {"kind": "NodeList", "apiVersion": "v1",
                                     "metadata": {"resourceVersion": str(self.rv)}, "items": copy.deepcopy(self.nodes)})
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" and method == "PATCH":
            return self._patch_pod(h, parts[3], parts[5])
        if len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "events" and method == "POST":
            event = h._body()
            meta = event.setdefault("metadata", {})
            meta["name"] = meta.get("name") or meta.get("generateName", "event.") + uuid.uuid4().hex[:8]
            meta["namespace"] = parts[3]
            with self.lock:
                self.events.append(event)
            return h._send(201, event)
        if len(parts) == 2 and parts[0] == "apis" and method == "GET":  # discovery of one group
            return h._send(200, {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1],
                                 "preferredVersion": {"groupVersion": f"{parts[1]}/v1", "version": "v1"}})
        kind = None
        if len(parts) == 3 and parts[:2] == ["api", "v1"]:
            kind = ("", parts[2])
        elif len(parts) == 4 and parts[0] == "apis":
            kind = (parts[1], parts[3])
        if kind is not None and method == "GET":
            return self._list_workloads(h, kind, query)
        workload = None
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] != "pods":
            workload = ("", parts[4], parts[3], parts[5])
        elif len(parts) == 7 and parts[0] == "apis" and parts[3] == "namespaces" and parts[1] != "coordination.k8s.io":
            workload = (parts[1], parts[5], parts[4], parts[6])
        if workload is not None and method == "GET":
            with self.lock:
                found = copy.deepcopy(self.workloads.get(workload))
            if found is None:
                return h._send(404, _status(404, "NotFound", f'{workload[1]} "{workload[3]}" not found'))
            return h._send(200, found)
        if len(parts) == 5 and parts[:3] == ["apis", "admissionregistration.k8s.io", "v1"] and method == "GET":
            with self.lock:
                found = copy.deepcopy(self.webhook_configurations.get((parts[3], parts[4])))
            if found is None:
                return h._send(404, _status(404, "NotFound", f'{parts[3]} "{parts[4]}" not found'))
            return h._send(200, found)
        if parts[:5] == ["apis", "coordination.k8s.io", "v1", "namespaces", parts[4] if len(parts) > 4 else ""] \
                and len(parts) >= 6 and parts[5] == "leases":
            return self._lease(h, method, parts[4], parts[6] if len(parts) > 6 else None)
        return h._send(404, _status(404, "NotFound", f"the double does not serve {method} /{'/'.join(parts)}"))

    def _list_pods(self, h: Any, query: dict[str, str]) -> None:
        """A page of the pods in name order. The first page fixes the list's names (a paged
        list is one snapshot, as the API server serves it); its `continue` token
        (`list:offset`) names them; a pod deleted meanwhile is left out of later pages."""
        with self.lock:
            token = query.get("continue") or ""
            if token:
                listing, _, offset = token.partition(":")
                keys, start = self.listings[int(listing)], int(offset)
            else:
                keys, start, listing = sorted(self.pods), 0, str(self.rv)
                self.listings[self.rv] = keys
                while len(self.listings) > 8:
                    del self.listings[next(iter(self.listings))]
            limit = int(query.get("limit") or 0) or len(keys) or 1
            page = [pod for k in keys[start:start + limit] if (pod := self.pods.get(k)) is not None]
            meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
            if start + limit < len(keys):
                meta["continue"] = f"{listing}:{start + limit}"
            data = orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})
        h._send(200, data)

    def _list_workloads(self, h: Any, kind: tuple[str, str], query: dict[str, str]) -> None:
        """A page of a served kind's objects in (namespace, name) order; `continue` is the offset."""
        with self.lock:
            if kind not in self.served:
                return h._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            keys = sorted(k for k in self.workloads if k[:2] == kind)
            start = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0) or len(keys) or 1
            meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
            if start + limit < len(keys):
                meta["continue"] = str(start + limit)
            items = [_copy(self.workloads[k]) for k in keys[start:start + limit]]
        h._send(200, {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": items})

    def _watch(self, h: Any, query: dict[str, str]) -> None:
        since = int(query.get("resourceVersion") or 0)
        timeout = min(float(query.get("timeoutSeconds") or 5), 30.0)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Connection", "close")  # the stream ends when the connection does
        h.end_headers()
        h.close_connection = True
        with self.lock:
            if since < self.oldest:
                line = {"type": "ERROR", "object": _status(410, "Expired",
                                                           f"too old resource version: {since} ({self.oldest})")}
                h.wfile.write(json.dumps(line).encode() + b"\n")
                return
            sent = since
            deadline = threading.Event()
            timer = threading.Timer(timeout, lambda: (deadline.set(), self._wake()))
            timer.start()
            try:
                while not deadline.is_set():
                    fresh = [(rv, kind, obj) for rv, kind, obj in self.history if rv > sent]
                    for rv, kind, obj in fresh:
                        h.wfile.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                        sent = rv
                    h.wfile.flush()
                    self.lock.wait(timeout)
                if query.get("allowWatchBookmarks") == "true":
                    bookmark = {"kind": "Pod", "apiVersion": "v1",
                                "metadata": {"resourceVersion": str(max(sent, since))}}
                    h.wfile.write(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
            finally:
                timer.cancel()

    def _wake(self) -> None:
        with self.lock:
            self.lock.notify_all()

    def _patch_pod(self, h: Any, namespace: str, name: str) -> None:
        body = h._body()
        content = h.headers.get("Content-Type", "")
        with self.lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                return h._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
            try:
                if "json-patch" in content:
                    patched = jsonpatch.apply_patch(_copy(pod), body, in_place=True)
                elif "merge-patch" in content:
                    patched = _merge(pod, body)
                else:
                    return h._send(415, _status(415, "UnsupportedMediaType", f"{content} is not supported here"))
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                return h._send(422, _status(422, "Invalid", f"the server rejected our request: {exc}"))
            before = {g.get("name") for g in pod["spec"].get("schedulingGates") or []}
            after = {g.get("name") for g in patched["spec"].get("schedulingGates") or []}
            if after - before:
                message = "spec.schedulingGates: Forbidden: only deletion is allowed"
                return h._send(422, _status(422, "Invalid", message))
            self.pods[(namespace, name)] = patched
            self._bump("MODIFIED", patched)
            return h._send(200, patched)

    def _lease(self, h: Any, method: str, namespace: str, name: str | None) -> None:
        with self.lock:
            if method == "GET" and name:
                lease = self.leases.get((namespace, name))
                if lease is None:
                    return h._send(404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found'))
                return h._send(200, lease)
            body = h._body()
            if method == "POST":
                key = (namespace, body["metadata"]["name"])
                if key in self.leases:
                    return h._send(409, _status(409, "AlreadyExists", f'leases "{key[1]}" already exists'))
            elif method == "PUT" and name:
                key = (namespace, name)
                current = self.leases.get(key)
                if current is None:
                    return h._send(404, _status(404, "NotFound", f'leases "{name}" not found'))
                if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    return h._send(409, _status(409, "Conflict", "the object has been modified; please apply your "
                                                                  "changes to the latest version and try again"))
            else:
                return h._send(405, _status(405, "MethodNotAllowed", method))
            self.rv += 1
            body["metadata"].update(namespace=namespace, resourceVersion=str(self.rv))
            self.leases[key] = body
            return h._send(201 if method == "POST" else 200, body)

"""The API server, through the kubernetes client: the endpoints the controller uses, as raw JSON.

Objects stay plain dicts (`_preload_content=False`): the pure core reads them as the API
server sends them, and 100,000 pods are not turned into client model objects. Writes and
untyped reads go straight through the client's connection pool (`_request`), kept-alive
connections reused; many pod PATCHes go out at once (`patch_pods`). Client errors become
`ClusterError`, with the HTTP status kept.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from gateway.errors import ConfigError, GatewayError

#: Connections to the API server kept open, and so the most requests in flight at once (the
#: gate release's PATCHes, `Cluster.patch_pods`): a connection beyond would be opened anew for
#: each request. More in flight hides more of the API server's latency; 16 keeps the test
#: double on 2 CPUs (a thread per connection) at its best.
POOL_CONNECTIONS = 16


class ClusterError(GatewayError):
    """A request to the API server failed; `status` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _data(response: Any) -> Any:
    return orjson.loads(response.data)


class Cluster:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self._versions: dict[str, str] = {}

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            raise ClusterError(f"{what}: {exc.status} {exc.reason}", exc.status or 0) from exc
        except Exception as exc:  # urllib3 connection errors and the like
            raise ClusterError(f"{what}: {exc}") from exc

    # ---------------------------------------------------------------- pods and nodes

    def pod_pages(self, *, limit: int = 5000) -> Iterator[tuple[list[dict[str, Any]], str]]:
        """Every pod, a page of at most `limit` at a time, each with the list's resourceVersion
        (the last page's is the one to watch from). A caller that keeps only what it needs of
        each page never holds the whole list."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": limit}
            if token:
                kwargs["_continue"] = token
            page = _data(self._call("list pods", self.core.list_pod_for_all_namespaces, **kwargs))
            meta = page.get("metadata") or {}
            yield page.get("items") or [], str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            if not token:
                return

    def list_pods(self, *, limit: int = 5000) -> tuple[list[dict[str, Any]], str]:
        """Every pod, and the list's resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        rv = ""
        for page, page_rv in self.pod_pages(limit=limit):
            items.extend(page)
            rv = page_rv
        return items, rv

    def watch_pods(self, resource_version: str, *, timeout_s: int) -> Iterator[dict[str, Any]]:
        """Watch events (`type`, `object`) after `resource_version`, for at most `timeout_s`.

        An expired resourceVersion ends in ClusterError with status 410: list again.
        """
        response = self._call("watch pods", self.core.list_pod_for_all_namespaces, watch=True,
                              resource_version=resource_version, timeout_seconds=timeout_s,
                              allow_watch_bookmarks=True)
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if not line or not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ClusterError(f"watch pods: {status.get('reason')}: {status.get('message')}",
                                       int(status.get("code") or 0))
                yield event
        finally:
            response.close()
            response.release_conn()

    def list_nodes(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _data(self._call("list nodes", self.core.list_node)).get("items") or []
        return items

    def patch_pod(self, namespace: str, name: str, patch: Any) -> None:
        """A JSON patch (a list of operations) or a merge patch (a dict) of one pod."""
        path, body, content = _pod_patch(namespace, name, patch)
        self._request(f"patch pod {namespace}/{name}", "PATCH", path, body=body, content_type=content)

    def patch_pods(self, patches: Sequence[tuple[str, str, Any]], *,
                   in_flight: int = POOL_CONNECTIONS) -> list[ClusterError | None]:
        """PATCH many pods ((namespace, name, patch) as `patch_pod` takes them), `in_flight` at
        a time; each one's outcome, in order (None: patched).

        One thread keeps `in_flight` kept-alive connections of the client's pool busy, each
        sending its next PATCH as soon as it has read the answer to its last: about half the
        CPU per PATCH of a thread each going through the pool's layers (a 4,096-pod gang
        release is 4,096 PATCHes). Through an HTTP proxy, one `patch_pod` after another.
        """
        results: list[ClusterError | None] = [None] * len(patches)
        manager = self.api.rest_client.pool_manager
        if isinstance(manager, urllib3.ProxyManager) or len(patches) < 2 or in_flight < 2:
            for index, (namespace, name, patch) in enumerate(patches):
                try:
                    self.patch_pod(namespace, name, patch)
                except ClusterError as exc:
                    results[index] = exc
            return results
        pool = manager.connection_from_url(self.api.configuration.host)
        headers = self._headers("PATCH", "/api/v1/pods")
        todo = iter(enumerate(patches))
        sent: deque[tuple[int, Any]] = deque()

        def send(conn: Any) -> None:
            """Send the next PATCH on `conn` (a connection reconnects on use once closed), or
            give the connection back when none is left."""
            for index, (namespace, name, patch) in todo:
                path, body, content = _pod_patch(namespace, name, patch)
                try:
                    conn.request("PATCH", path, body=body, headers={**headers, "Content-Type": content})
                except Exception as exc:  # connection errors and the like
                    results[index] = ClusterError(f"patch pod {namespace}/{name}: {exc}")
                    conn.close()
                    continue
                sent.append((index, conn))
                return
            pool._put_conn(conn)

        try:
            for _ in range(min(in_flight, len(patches))):
                send(pool._get_conn())
        except Exception as exc:  # a closed pool: nothing more can be sent
            for index, _ in todo:
                results[index] = ClusterError(f"patch pod: {exc}")
        while sent:
            index, conn = sent.popleft()
            what = f"patch pod {patches[index][0]}/{patches[index][1]}"
            try:
                response = conn.getresponse()
                response.read()  # the whole answer, so that the connection carries the next request
            except Exception as exc:
                results[index] = ClusterError(f"{what}: {exc}")
                conn.close()
            else:
                if not 200 <= response.status < 300:
                    results[index] = ClusterError(f"{what}: {response.status} {response.reason}", response.status)
            send(conn)
        return results

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self._request(f"create event in {namespace}", "POST", f"/api/v1/namespaces/{quote(namespace, safe='')}/events",
                      body=orjson.dumps(event), content_type="application/json")

    # ---------------------------------------------------------------- any workload

    def _request(self, what: str, method: str, path: str, *, body: bytes | None = None,
                 content_type: str = "") -> bytes:
        """One request straight through the client's connection pool (its TLS, proxy and
        credentials), the answer read whole so that its connection is kept for the next one:
        about half the CPU of the typed client's methods, which a 4,096-pod gang release
        (4,096 PATCHes) feels."""
        try:
            headers = self._headers(method, path)
            if content_type:
                headers["Content-Type"] = content_type
            response = self.api.rest_client.pool_manager.urlopen(
                method, self.api.configuration.host + path, body=body, headers=headers, preload_content=False)
            try:
                data = response.read()
            finally:
                response.release_conn()
        except Exception as exc:  # urllib3 connection errors and the like
            raise ClusterError(f"{what}: {exc}") from exc
        if not 200 <= response.status < 300:
            raise ClusterError(f"{what}: {response.status} {response.reason}", response.status)
        return bytes(data)

    def _headers(self, method: str, path: str) -> dict[str, str]:
        """The client's default headers and credentials (a token refreshed when due)."""
        headers = {**self.api.default_headers, "Accept": "application/json"}
        self.api.update_params_for_auth(headers, None, ["BearerToken"], path, method, None)
        return headers

    def _get(self, what: str, path: str) -> Any:
        """GET a path the typed client has no method for (any workload kind), as JSON."""
        data = self._request(what, "GET", path)
        return orjson.loads(data) if data else {}

    def _version(self, group: str) -> str:
        """The API server's preferred version of `group` (discovery, cached)."""
        if group not in self._versions:
            found = self._get(f"discover {group}", f"/apis/{group}")
            self._versions[group] = str((found.get("preferredVersion") or {}).get("version") or "v1")
        return self._versions[group]

    def workload_pages(self, resource_key: str, *, limit: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Every object of a workload kind (`resource.group`, as ledger keys name it) in every
        namespace, a page of at most `limit` at a time. A kind the API server does not serve (its
        CRD is not installed) ends in ClusterError with status 404."""
        resource, _, group = resource_key.partition(".")
        base = f"/apis/{group}/{self._version(group)}" if group else "/api/v1"
        token = ""
        while True:
            query = f"?limit={limit}" + (f"&continue={quote(token, safe='')}" if token else "")
            page = self._get(f"list {resource_key}", f"{base}/{resource}{query}")
            yield page.get("items") or []
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    def object_exists(self, resource_key: str, namespace: str, name: str) -> bool:
        """Whether the object a ledger key names (`resource.group`, namespace, name) exists."""
        resource, _, group = resource_key.partition(".")
        base = f"/apis/{group}/{self._version(group)}" if group else "/api/v1"
        try:
            self._get(f"get {resource_key} {namespace}/{name}", f"{base}/namespaces/{namespace}/{resource}/{name}")
        except ClusterError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ---------------------------------------------------------------- webhook configurations

    def read_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None:
        """The `validating` or `mutating` webhook configuration `name`; None when it does not exist."""
        read = (self.admission.read_validating_webhook_configuration if kind == "validating"
                else self.admission.read_mutating_webhook_configuration)
        try:
            config: dict[str, Any] = _data(self._call(f"read {kind} webhook configuration {name}", read, name))
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise
        return config

    # ---------------------------------------------------------------- leases

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = _data(self._call("read lease", self.coordination.read_namespaced_lease,
                                                     name, namespace))
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise
        return lease

    def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = _data(self._call("create lease", self.coordination.create_namespaced_lease,
                                                   namespace, lease))
        return created

    def replace_lease(self, namespace: str, name: str, lease: dict[str, Any]) -> dict[str, Any]:
        """Replace, guarded by the lease's resourceVersion: 409 when someone else wrote it first."""
        replaced: dict[str, Any] = _data(self._call("replace lease", self.coordination.replace_namespaced_lease,
                                                    name, namespace, lease))
        return replaced


def _pod_patch(namespace: str, name: str, patch: Any) -> tuple[str, bytes, str]:
    """Path, body and content type of a pod's JSON patch (a list) or merge patch (a dict)."""
    content = "application/merge-patch+json" if isinstance(patch, dict) else "application/json-patch+json"
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}", orjson.dumps(patch), content


def api_client(kubeconfig: str | None = None, *, host: str | None = None) -> client.ApiClient:
    """A client from a kubeconfig, the in-cluster service account, or (tests) a plain `host`."""
    from kubernetes import config

    configuration = client.Configuration()
    try:
        if host is not None:
            configuration.host = host
        elif kubeconfig is not None:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise ConfigError(f"no access to the Kubernetes API (not in a cluster, and no usable kubeconfig: "
                          f"give --kubeconfig or set KUBECONFIG): {exc}") from exc
    # Every request in flight keeps its connection for the next one (the default pool is 5 per CPU).
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL_CONNECTIONS)
    return client.ApiClient(configuration)

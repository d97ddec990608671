"""The API server, through the kubernetes client: the endpoints the controller uses, as raw JSON.

Objects stay plain dicts (`_preload_content=False`): the pure core reads them as the API
server sends them, and 100,000 pods are not turned into client model objects. Client
errors become `ClusterError`, with the HTTP status kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from gateway.errors import GatewayError


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
        kwargs = {}
        if isinstance(patch, dict):
            kwargs["_content_type"] = "application/merge-patch+json"
        self._call(f"patch pod {namespace}/{name}", self.core.patch_namespaced_pod, name, namespace, patch, **kwargs)

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self._call(f"create event in {namespace}", self.core.create_namespaced_event, namespace, event)

    # ---------------------------------------------------------------- any workload

    def _get(self, what: str, path: str) -> Any:
        """GET a path the typed client has no method for (any workload kind), as JSON."""
        try:
            method, url, headers, body, post = self.api.param_serialize(
                "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            response = self.api.call_api(method, url, header_params=headers, body=body, post_params=post)
            response.read()  # type: ignore[no-untyped-call]
        except Exception as exc:  # urllib3 connection errors and the like
            raise ClusterError(f"{what}: {exc}") from exc
        if not 200 <= response.status < 300:
            raise ClusterError(f"{what}: {response.status} {response.reason}", response.status)
        return orjson.loads(response.data) if response.data else {}

    def _version(self, group: str) -> str:
        """The API server's preferred version of `group` (discovery, cached)."""
        if group not in self._versions:
            found = self._get(f"discover {group}", f"/apis/{group}")
            self._versions[group] = str((found.get("preferredVersion") or {}).get("version") or "v1")
        return self._versions[group]

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


def api_client(kubeconfig: str | None = None, *, host: str | None = None) -> client.ApiClient:
    """A client from a kubeconfig, the in-cluster service account, or (tests) a plain `host`."""
    from kubernetes import config

    configuration = client.Configuration()
    if host is not None:
        configuration.host = host
    elif kubeconfig is not None:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)

"""gpu-gateway benchmarks: figures against a baseline measured in the same run.

Run them all with one command from the repository root::

    python3 -m benchmarks              # full run, about 4 minutes
    python3 -m benchmarks --quick      # smoke run, about a minute
    python3 -m benchmarks --json out.json

Three parts:

* `benchmarks.http_bench`: POST /validate on the real gateway server
  (`gateway.server.run_server` as ``gpu-gateway serve`` runs it: uvicorn, 1 worker, fresh
  SQLite state, production defaults; `benchmarks.gateway_server`) against a null webhook
  (`benchmarks.null_webhook`) on the same stack
  (Starlette + uvicorn + orjson: parse the AdmissionReview, answer allowed), both as
  separate processes on 127.0.0.1, driven by `wrk` with a realistic request mix and an
  all-launch stream (`benchmarks.payloads`, `benchmarks/wrk.lua.in`): closed-loop max
  throughput, latency at a paced 2,000 req/s, and the server's CPU per request; then a
  launch's burst, 4,096 pod creates by the training operator at once (`benchmarks.burst`),
  and the floor (the null webhook's p99 plus the state disk's fsync p99). Needs Debian's
  `wrk` (``apt-get install -y wrk``); the HTTP part is skipped, and says so, without it.
* `benchmarks.core`: decisions/s of the pure pipeline ``parse_review -> prepare ->
  decide`` with a large generated bundle (`benchmarks.bundle`: 10,000 users, 1,000
  teams), against raw casbin ``Enforcer.enforce`` on the same bundle, and `load_bundle` time.
* `benchmarks.service_bench`: `AdmissionService.validate` in-process on the HTTP mix, with
  the real SQLite store (synchronous FULL and NORMAL) and the disk's fsync latency: where
  the gap between the gateway and the null webhook goes.

Not part of the test suite; the load generator shares the machine's cores with the servers.
"""

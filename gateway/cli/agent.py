"""`gpu-gateway agent`: the node agent (docs/agent.md)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import CliError, Exit, examples

log = logging.getLogger("gateway.agent")


@click.command(epilog=examples(
    "gpu-gateway agent --gateway https://gpu-gateway.gpu-gateway.svc:8443 "
    "--token-file /var/run/secrets/tokens/gpu-gateway",
    "gpu-gateway agent --gateway http://127.0.0.1:8080 --token-file token --simulate node.yaml --buffer-dir ./spool"))
@click.option("--gateway", "gateway_url", required=True, metavar="URL",
              help="The gateway's base URL, e.g. https://gpu-gateway.gpu-gateway.svc:8443.")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bearer token (projected service-account token or JWT); re-read when it changes.")
@click.option("--simulate", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Read a scripted device table instead of NVML (docs/agent.md).")
@click.option("--node-name", envvar="NODE_NAME", help="This node's name (default: the host name).")
@click.option("--interval", type=float, default=None, help="Seconds between samples [default: 10, or the "
              "simulation's interval_s].")
@click.option("--tick-seconds", type=float, help="With --simulate: real seconds per tick (default: the interval).")
@click.option("--ticks", type=int, help="Stop after this many samples (with --simulate: default the script's).")
@click.option("--buffer-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/var/lib/gpu-gateway-agent/spool"), show_default=True,
              help="Reports wait here while the gateway is unreachable.")
@click.option("--buffer-max-reports", type=int, default=8640, show_default=True,
              help="Spool bound in reports (one per sample interval: 8640 = 24 h at 10 s).")
@click.option("--buffer-max-mib", type=int, default=192, show_default=True,
              help="Spool bound in MiB (keep it under the volume's size).")
@click.option("--retry-max-s", type=float, default=60.0, show_default=True, help="Longest backoff between tries.")
@click.option("--certificate-authority", type=click.Path(exists=True, dir_okay=False),
              help="CA bundle that signed the gateway's certificate.")
@click.option("--insecure-skip-tls-verify", is_flag=True, help="Do not verify the gateway's certificate.")
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
@click.option("--metrics-port", type=int, default=9400, show_default=True, help="/metrics port (0: off).")
@click.option("--proc-root", type=click.Path(file_okay=False, path_type=Path), default=Path("/proc"),
              show_default=True, help="The host's /proc (the agent needs hostPID to see GPU processes).")
@click.option("--pod-resources-socket", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/var/lib/kubelet/pod-resources/kubelet.sock"), show_default=True,
              help="The kubelet's pod-resources API: which pod each GPU is allocated to (used when present).")
@click.option("--kube-pods/--no-kube-pods", default=None,
              help="Name pod UIDs through the API server (default: on when running in a cluster).")
@click.option("--log-level", default="INFO", show_default=True)
def agent(gateway_url: str, token_file: Path, simulate: Path | None, node_name: str | None, interval: float | None,
          tick_seconds: float | None, ticks: int | None, buffer_dir: Path, buffer_max_reports: int,
          buffer_max_mib: int, retry_max_s: float, certificate_authority: str | None, insecure_skip_tls_verify: bool,
          metrics_host: str, metrics_port: int, proc_root: Path, pod_resources_socket: Path, kube_pods: bool | None,
          log_level: str) -> None:
    """Run the node agent: sample every GPU through NVML, map processes to pods, report to the gateway."""
    from prometheus_client import start_http_server

    from gateway.logs import setup_logging
    from gateway.telemetry.agent.agent import Agent
    from gateway.telemetry.agent.metrics import AgentMetrics
    from gateway.telemetry.agent.nvml import DeviceSource, PynvmlSource
    from gateway.telemetry.agent.pods import CgroupReader, KubePods, PodDirectory, ProcCgroups, StaticPods
    from gateway.telemetry.agent.reporter import Reporter, Spool, TokenFile
    from gateway.telemetry.agent.simulate import ScriptedSource, SimulationError, load_simulation
    from gateway.telemetry.samples import PodRef

    setup_logging(log_level)
    if not gateway_url.startswith(("https://", "http://")):
        raise click.BadParameter("must be an http(s):// URL", param_hint="--gateway")
    if buffer_max_reports < 1 or buffer_max_mib < 1:
        raise click.BadParameter("spool bounds must be positive", param_hint="--buffer-max-reports/--buffer-max-mib")
    source: DeviceSource
    cgroups: CgroupReader
    pods: PodDirectory
    allocations: Callable[[], dict[str, PodRef]] | None = None
    clock: Callable[[int], float] | None = None
    if simulate is not None:
        try:
            sim = load_simulation(simulate)
        except SimulationError as exc:
            raise CliError(Exit.USAGE, str(exc)) from None
        scripted = ScriptedSource(sim)
        source, cgroups, pods, allocations = scripted, scripted, StaticPods(sim.pods), scripted.allocations
        node = node_name or sim.node
        interval = interval or sim.interval_s
        ticks = ticks or sim.ticks
        # Simulated time: the script's ticks are `interval` apart and its last one is now, so
        # an hour of script can run in seconds and its samples are never in the future.
        step = interval
        start = time.time() - ticks * step

        def simulated(n: int) -> float:
            return round(start + n * step, 3)

        clock = simulated
    else:
        node = node_name or socket.gethostname()
        interval = interval or 10.0
        source, cgroups = PynvmlSource(), ProcCgroups(proc_root)
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        pods = KubePods(node) if (kube_pods if kube_pods is not None else in_cluster) else StaticPods({})
        if pod_resources_socket.exists():
            from gateway.telemetry.agent.podresources import KubeletPodResources

            allocations = KubeletPodResources(pod_resources_socket).allocations
    if not 0 < interval <= 300:
        raise click.BadParameter("must be between 0 and 300 seconds", param_hint="--interval")
    verify: Any = True
    if insecure_skip_tls_verify:
        verify = False
    elif certificate_authority:
        verify = ssl.create_default_context(cafile=certificate_authority)
    metrics = AgentMetrics(node)
    try:
        spool = Spool(buffer_dir, max_reports=buffer_max_reports, max_bytes=buffer_max_mib * 2**20)
    except OSError as exc:
        raise CliError(Exit.USAGE, f"cannot use the buffer directory {buffer_dir}: {exc}") from None
    metrics.watch_spool(spool.stats)
    reporter = Reporter(gateway_url, TokenFile(token_file), spool, verify=verify, retry_max_s=retry_max_s,
                        retry_min_s=min(1.0, retry_max_s), metrics=metrics)
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
    stop = threading.Event()

    def on_signal(signum: int, *_: Any) -> None:
        log.info("stopping on signal %d", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("gpu-gateway agent on node %s reporting to %s every %gs%s", node, gateway_url, interval,
             f" (simulating {simulate})" if simulate else "")
    reporter.start()
    runner = Agent(node, source, cgroups, pods, reporter, metrics, interval_s=interval, allocations=allocations)
    try:
        runner.run(stop, ticks=ticks, tick_s=tick_seconds, clock=clock)
    finally:
        reporter.stop(drain_s=10.0 if not stop.is_set() else 5.0)
        source.close()
    stats = spool.stats()
    log.info("agent stopped after %d ticks: %d samples acknowledged, %d reports still spooled, %d samples dropped",
             runner.ticks, reporter.sent_samples, stats.reports, stats.dropped_samples)


if __name__ == "__main__":
    agent()

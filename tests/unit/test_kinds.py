"""Workload kinds registered in limits.yaml (`workload_kinds`) and GPUs the gateway cannot count.

Objects are shaped as users submit them (fixtures in tests/fixtures/crds/ follow each project's
own examples); the registry is the one the default bundle ships, unless a test builds its own.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders_workloads import (
    assert_templates_resolve,
    ctr,
    group_kind,
    load_crd,
    obj,
    read,
    shipped_kinds,
    template,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.admission.kinds import KindRegistry, parse_kinds
from gateway.admission.quantity import MAX_GPUS
from gateway.admission.workloads import ADAPTERS, GpuMatcher, Workload, read_workload
from gateway.errors import ConfigError, RequestError, WorkloadError
from gateway.policy_bundle import PolicyHolder, load_bundle

GPU = "nvidia.com/gpu"
POLICIES = Path(__file__).resolve().parents[2] / "policies"
PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def sets(workload: Workload) -> list[tuple[str, int, int, str | None]]:
    return [(ps.name, ps.count, ps.gpus_each, ps.template_path) for ps in workload.pod_sets]


def registry(*entries: dict[str, Any]) -> KindRegistry:
    return parse_kinds(list(entries), builtin=ADAPTERS)


# ================================================================== KServe InferenceService


def test_kserve_model_gpus_are_counted_at_max_replicas():
    workload = read(load_crd("inferenceservice-llama.yaml"))  # minReplicas 1, maxReplicas 3
    assert sets(workload) == [("spec.predictor", 3, 1, None)]
    assert (workload.gpus, workload.unresolved) == (3, ())


def test_kserve_custom_predictor_containers_are_counted():
    workload = read(load_crd("inferenceservice.yaml"))
    assert sets(workload) == [("spec.predictor", 4, 1, None)]


def test_kserve_predictor_and_transformer_are_pod_sets_of_their_own():
    isvc = load_crd("inferenceservice-llama.yaml")
    isvc["spec"]["transformer"] = {"minReplicas": 2, "maxReplicas": 2, "containers": [ctr(1, name="tok")]}
    assert sets(read(isvc)) == [("spec.predictor", 3, 1, None), ("spec.transformer", 2, 1, None)]


@pytest.mark.parametrize("max_replicas", [None, 0])
def test_kserve_without_a_replica_maximum_is_unresolved(max_replicas):
    isvc = load_crd("inferenceservice-llama.yaml")
    if max_replicas is None:
        del isvc["spec"]["predictor"]["maxReplicas"]
    else:
        isvc["spec"]["predictor"]["maxReplicas"] = max_replicas
    workload = read(isvc)
    assert workload.gpus == 0
    [reason] = workload.unresolved
    assert reason.startswith("may run spec.predictor without a bound it can read (spec.predictor.maxReplicas is ")
    assert "set spec.predictor.maxReplicas" in reason


def test_kserve_without_gpus_needs_no_replica_maximum():
    isvc = load_crd("inferenceservice-llama.yaml")
    del isvc["spec"]["predictor"]["maxReplicas"]
    del isvc["spec"]["predictor"]["model"]["resources"]["limits"][GPU]
    del isvc["spec"]["predictor"]["model"]["resources"]["requests"][GPU]
    workload = read(isvc)
    assert (workload.gpus, workload.unresolved) == (0, ())


def test_kserve_model_without_resources_takes_them_from_its_serving_runtime():
    isvc = load_crd("inferenceservice-llama.yaml")
    del isvc["spec"]["predictor"]["model"]["resources"]
    assert read(isvc).unresolved == (
        "takes the resources of its model server from its ServingRuntime, which the gateway cannot read; "
        "set spec.predictor.model.resources",)


def test_a_serving_runtime_runs_no_pods_itself():
    runtime = obj("serving.kserve.io/v1alpha1", "ServingRuntime", {
        "supportedModelFormats": [{"name": "huggingface"}], "containers": [ctr(8, name="kserve-container")]})
    workload = read(runtime)
    assert (workload.pod_sets, workload.unresolved) == ((), ())


# ================================================================== Spark


def test_spark_driver_and_executor_gpu_blocks_times_instances():
    workload = read(load_crd("sparkapplication-gpu.yaml"))  # driver 1 GPU, 2 executors x 1 GPU
    assert sets(workload) == [("spec.driver", 1, 1, None), ("spec.executor", 2, 1, None)]
    assert workload.describe_gpus() == "3 pods x 1 nvidia.com/gpu"


def test_spark_executors_default_to_one_instance():
    app = load_crd("sparkapplication-gpu.yaml")
    del app["spec"]["executor"]["instances"]
    assert read(app).pod_sets[1].count == 1


def test_spark_dynamic_allocation_counts_its_maximum_while_enabled():
    app = load_crd("sparkapplication-gpu.yaml")
    app["spec"]["dynamicAllocation"] = {"enabled": True, "initialExecutors": 2, "minExecutors": 1, "maxExecutors": 10}
    assert read(app).pod_sets[1].count == 10
    app["spec"]["dynamicAllocation"]["enabled"] = False
    assert read(app).pod_sets[1].count == 2


def test_spark_dynamic_allocation_without_a_maximum_is_unresolved():
    app = load_crd("sparkapplication-gpu.yaml")
    app["spec"]["dynamicAllocation"] = {"enabled": True, "minExecutors": 1}
    [reason] = read(app).unresolved
    assert "spec.dynamicAllocation.maxExecutors is not set" in reason
    assert reason.endswith("set spec.dynamicAllocation.maxExecutors")


def test_spark_sidecars_with_gpus_add_to_their_pod():
    app = load_crd("sparkapplication-gpu.yaml")
    app["spec"]["executor"]["sidecars"] = [ctr(1, name="profiler")]
    assert read(app).pod_sets[1].gpus_per_pod == {GPU: 2}


def test_spark_gpus_asked_in_spark_conf_are_unresolved():
    app = load_crd("sparkapplication-gpu.yaml")
    del app["spec"]["executor"]["gpu"]
    app["spec"]["sparkConf"] = {"spark.executor.resource.gpu.amount": "1",
                                "spark.executor.resource.gpu.vendor": "nvidia.com"}
    assert read(app).unresolved == ("asks for executor GPUs in sparkConf; use spec.executor.gpu",)


@pytest.mark.parametrize(("gpu", "message"), [
    ({"name": GPU, "quantity": "0.5"}, r"^spec\.executor\.gpu\.quantity: nvidia\.com/gpu: .*fractional"),
    ({"quantity": 1}, r"^spec\.executor\.gpu\.name must name a resource"),
    ("nvidia.com/gpu", r"^spec\.executor\.gpu is not an object"),
])
def test_spark_unreadable_gpu_blocks_are_refused_naming_the_field(gpu, message):
    app = load_crd("sparkapplication-gpu.yaml")
    app["spec"]["executor"]["gpu"] = gpu
    with pytest.raises(WorkloadError, match=message):
        read(app)


def test_spark_executor_instances_must_be_a_count():
    app = load_crd("sparkapplication-gpu.yaml")
    app["spec"]["executor"]["instances"] = -2
    with pytest.raises(WorkloadError, match=r"spec\.executor\.instances must not be negative"):
        read(app)


# ================================================================== Argo Workflows


def workflow(templates: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"generateName": "wf-", "namespace": "research"},
            "spec": {"entrypoint": "main", **spec, "templates": templates}}


def gpu_template(name: str = "train", gpus: int = 2) -> dict[str, Any]:
    return {"name": name, "container": {"image": "ghcr.io/lab/train:1",
                                        "resources": {"limits": {GPU: gpus}}}}


def steps(name: str, *groups: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"name": name, "steps": [list(g) for g in groups], **fields}


def test_argo_with_items_fans_the_gpu_template_out():
    workload = read(load_crd("workflow-sweep.yaml"))  # 4 items x 2 GPUs
    assert sets(workload) == [("spec.templates[1]", 4, 2, None)]
    assert (workload.gpus, workload.unresolved) == (8, ())


def test_argo_entrypoint_container_runs_once_and_unused_templates_not_at_all():
    wf = workflow([gpu_template("main", 1), gpu_template("spare", 8)])
    assert sets(read(wf)) == [("spec.templates[0]", 1, 1, None), ("spec.templates[1]", 0, 8, None)]


def test_argo_nested_fan_outs_multiply_and_parallel_steps_add():
    wf = workflow([
        steps("main", [{"name": "outer", "template": "inner", "withItems": [1, 2]}]),
        steps("inner", [{"name": "a", "template": "train", "withItems": [1, 2, 3]},
                        {"name": "b", "template": "train"}]),
        gpu_template("train", 1),
    ])
    assert read(wf).pod_sets[0].count == 2 * (3 + 1)


def test_argo_dag_tasks_and_with_sequence_count():
    wf = workflow([
        {"name": "main", "dag": {"tasks": [
            {"name": "prep", "template": "train"},
            {"name": "shards", "template": "train", "depends": "prep", "withSequence": {"count": "5"}},
            {"name": "range", "template": "train", "withSequence": {"start": "2", "end": "4"}},
        ]}},
        gpu_template("train", 1),
    ])
    assert read(wf).gpus == 1 + 5 + 3


def test_argo_template_parallelism_caps_its_invocations():
    wf = workflow([steps("main", [{"name": "t", "template": "train", "withItems": list(range(10))}],
                         parallelism=3), gpu_template("train", 1)])
    assert read(wf).gpus == 3


def test_argo_with_param_is_bounded_only_by_spec_parallelism():
    fan = [steps("main", [{"name": "t", "template": "train", "withParam": "{{steps.list.outputs.result}}"}]),
           gpu_template("train", 2)]
    unbounded = read(workflow(fan))
    assert unbounded.gpus == 0
    [reason] = unbounded.unresolved
    assert reason == ("may run spec.templates[1] (train) without a bound it can read "
                      "(spec.templates[0].steps[0][0].withParam cannot be counted from the object); "
                      "set spec.parallelism")
    assert read(workflow(fan, parallelism=4)).gpus == 8
    expression = [steps("main", [{"name": "t", "template": "train", "withSequence": {"count": "{{inputs.n}}"}}]),
                  gpu_template("train", 2)]
    assert read(workflow(expression)).unresolved


@pytest.mark.parametrize("count", ["²", "\uff18", "1" * 20, "{{inputs.parameters.n}}"])
def test_argo_sequences_that_are_not_plain_numbers_are_unbounded_not_errors(count):
    wf = workflow([steps("main", [{"name": "t", "template": "train", "withSequence": {"count": count}}]),
                   gpu_template("train", 1)])
    assert "withSequence cannot be counted" in read(wf).unresolved[0]


def test_argo_recursion_is_unbounded():
    wf = workflow([steps("main", [{"name": "t", "template": "train"}], [{"name": "again", "template": "main"}]),
                   gpu_template("train", 1)])
    [reason] = read(wf).unresolved
    assert "is invoked in a cycle (recursion)" in reason


def test_argo_container_set_script_sidecars_and_init_containers_share_a_pod():
    wf = workflow([{
        "name": "main",
        "containerSet": {"containers": [ctr(1, name="a"), ctr(2, name="b")]},
        "sidecars": [ctr(1, name="monitor")],
        "initContainers": [ctr(8, name="warmup")],
    }])
    assert read(wf).pod_sets[0].gpus_per_pod == {GPU: 8}
    wf["spec"]["templates"][0]["initContainers"] = []
    assert read(wf).pod_sets[0].gpus_per_pod == {GPU: 4}
    script = workflow([{"name": "main", "script": {"image": "python:3.12", "source": "print(1)",
                                                    "resources": {"limits": {GPU: 1}}}}])
    assert read(script).gpus == 1


@pytest.mark.parametrize(("where", "field", "fragment"), [
    ("spec", {"workflowTemplateRef": {"name": "train-template"}}, "takes its templates from a WorkflowTemplate"),
    ("step", {"templateRef": {"name": "shared", "template": "gpu-train"}}, "runs a template of a WorkflowTemplate"),
    ("spec", {"podSpecPatch": '{"containers":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":"8"}}}]}'},
     "podSpecPatch"),
    ("spec", {"templateDefaults": {"container": {"resources": {"limits": {GPU: 8}}}}}, "templateDefaults"),
])
def test_argo_gpus_from_elsewhere_are_unresolved(where, field, fragment):
    wf = workflow([steps("main", [{"name": "t", "template": "train"}]), gpu_template("train", 1)])
    target = wf["spec"] if where == "spec" else wf["spec"]["templates"][0]["steps"][0][0]
    target.update(field)
    assert any(fragment in r for r in read(wf).unresolved)


def test_a_cron_workflow_counts_one_run_and_a_workflow_template_none():
    sweep = load_crd("workflow-sweep.yaml")["spec"]
    cron = {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow",
            "metadata": {"name": "nightly", "namespace": "research"},
            "spec": {"schedules": ["0 2 * * *"], "workflowSpec": sweep}}
    assert read(cron).gpus == 8
    wft = {"apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
           "metadata": {"name": "sweep", "namespace": "research"}, "spec": sweep}
    assert (read(wft).gpus, read(wft).unresolved) == (0, ())


# ================================================================== Kubeflow Notebook, TrainJob


def test_notebook_is_one_pod_from_its_template():
    nb = load_crd("notebook.yaml")
    workload = read(nb)
    assert sets(workload) == [("spec.template", 1, 1, "/spec/template")]
    assert_templates_resolve(nb, workload)


def test_trainjob_with_resources_per_node_is_counted():
    workload = read(load_crd("trainjob.yaml"))
    assert (workload.gpus, workload.unresolved) == (32, ())


def test_trainjob_without_resources_per_node_is_unresolved_naming_its_runtime():
    workload = read(load_crd("trainjob-runtime.yaml"))
    assert workload.gpus == 0
    assert workload.unresolved == ("takes its GPUs from runtime torch-distributed, which the gateway cannot "
                                   "read; set spec.trainer.resourcesPerNode",)
    assert workload.describe_gpus() == (
        "no GPUs, plus GPUs it cannot count: it takes its GPUs from runtime torch-distributed, which the "
        "gateway cannot read; set spec.trainer.resourcesPerNode")


# ================================================================== kinds nobody registered


def odd_crd(spec: dict[str, Any]) -> dict[str, Any]:
    return obj("inference.example.com/v1", "ModelDeployment", spec, name="chat")


def read_odd(o: dict[str, Any], kinds: KindRegistry | None = None) -> Workload:
    return read_workload(o, *group_kind(o), GpuMatcher(), kinds=kinds)


def test_an_unregistered_kind_naming_a_gpu_in_an_odd_place_is_unresolved():
    o = odd_crd({"replicas": 2, "accelerator": {"name": GPU, "count": 4}, "image": "ghcr.io/lab/chat:2"})
    workload = read_odd(o)
    assert workload.gpus == 0
    assert workload.unresolved == (
        "names nvidia.com/gpu at spec.accelerator.name, where the gateway does not count GPUs; add a "
        "workload_kinds entry for inference.example.com/ModelDeployment to limits.yaml",)


def test_an_unregistered_kind_with_a_gpu_map_key_beside_its_templates_is_unresolved():
    o = odd_crd({"replicas": 2, "template": template(1), "extraResources": {GPU: 8}})
    workload = read_odd(o)
    assert workload.gpus == 2
    assert "nvidia.com/gpu at spec.extraResources" in workload.unresolved[0]
    assert read_odd(odd_crd({"template": template(1), "extraResources": {GPU: 0}})).unresolved == ()


def test_gpu_names_inside_the_pod_specs_the_walker_reads_are_no_mystery():
    pod_template = template(2)
    pod_template["spec"]["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    workload = read(load_crd("cloneset.yaml") | {"spec": {"replicas": 3, "template": pod_template}})
    assert (workload.gpus, workload.unresolved) == (6, ())


def test_registering_the_kind_resolves_it():
    o = odd_crd({"replicas": 2, "accelerator": {"name": GPU, "quantity": 4}})
    kinds = registry({"group": "inference.example.com", "kind": "ModelDeployment",
                      "pods": [{"path": "/spec", "shape": "pod_spec", "gpus": ["accelerator"],
                                "replicas": ["replicas"]}]})
    workload = read_odd(o, kinds)
    assert (workload.gpus, workload.unresolved, sets(workload)) == (8, (), [("spec", 2, 4, None)])


# ================================================================== the registry itself


def test_the_shipped_registry_names_the_kinds_the_readme_lists():
    assert {(k.group, k.kind, k.resource) for k in shipped_kinds()} == {
        ("serving.kserve.io", "InferenceService", "inferenceservices"),
        ("serving.kserve.io", "ServingRuntime", "servingruntimes"),
        ("sparkoperator.k8s.io", "SparkApplication", "sparkapplications"),
        ("argoproj.io", "Workflow", "workflows"),
        ("argoproj.io", "CronWorkflow", "cronworkflows"),
        ("argoproj.io", "WorkflowTemplate", "workflowtemplates"),
        ("kubeflow.org", "Notebook", "notebooks"),
    }


def test_pod_set_names_are_unique_field_paths():
    wf = workflow([gpu_template("main", 1), gpu_template("train", 1), gpu_template("eval", 1)])
    names = [ps.name for ps in read(wf).pod_sets]
    assert names == ["spec.templates[0]", "spec.templates[1]", "spec.templates[2]"]


def test_a_wildcard_over_a_map_names_its_keys():
    kinds = registry({"group": "example.com", "kind": "Roles",
                      "pods": [{"path": "/spec/roles/*", "shape": "template", "replicas": ["replicas"]}]})
    o = obj("example.com/v1", "Roles", {"roles": {"worker": {"replicas": 3, **template(1)},
                                                  "a.b": template(2)}})
    workload = read_workload(o, "example.com", "Roles", GpuMatcher(), kinds=kinds)
    assert sets(workload) == [("spec.roles.worker", 3, 1, "/spec/roles/worker"),
                              ("spec.roles['a.b']", 1, 2, "/spec/roles/a.b")]
    assert_templates_resolve(o, workload)


BAD_ENTRIES = [
    ({"group": "x.io", "kind": "Thing"}, "workload_kinds[0] (x.io/Thing).pods: is missing"),
    ({"group": "x.io", "kind": "Thing", "pods": [{"path": "spec/template", "shape": "template"}]},
     "pods[0].path: 'spec/template' must start with /"),
    ({"group": "x.io", "kind": "Thing", "pods": [{"path": "/spec/template", "shape": "podtemplate"}]},
     "pods[0].shape: 'podtemplate' is not one of template, pod_spec, container"),
    ({"group": "x.io", "kind": "Thing", "pods": [{"path": "/spec/a b", "shape": "template"}]},
     "'a b' is not a field name"),
    ({"group": "x.io", "kind": "Thing", "pods": [{"path": "/spec/t", "shape": "template", "replica": ["n"]}]},
     "pods[0]: unknown setting(s) replica"),
    ({"group": "x.io", "kind": "Thing", "pods": [{"path": "/spec/t", "shape": "template",
                                                  "replicas": [{"field": "n/*"}]}]},
     "replicas[0].field: 'n/*': no * here"),
    ({"group": "x.io", "kind": "Thing", "pods": [{"path": "/spec/t", "shape": "template",
                                                  "replicas": [{"field": "n", "unbounded": [-1]}]}]},
     "replicas[0].unbounded: must be a non-negative integer"),
    ({"group": "kubeflow.org", "kind": "PyTorchJob", "pods": []}, "the gateway reads this kind itself"),
    ({"group": "X.io", "kind": "Thing", "pods": []}, "group: 'X.io' is not an API group"),
    ({"group": "x.io", "kind": "thing", "pods": []}, "kind: 'thing' is not a kind"),
    ({"group": "x.io", "kind": "Thing", "pods": [], "unresolved": [{"path": "/spec/ref"}]},
     "unresolved[0].why: must say"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_a_bad_entry_is_refused_naming_the_field(entry, message):
    with pytest.raises(ValueError) as info:
        parse_kinds([entry], builtin=ADAPTERS)
    assert message in str(info.value)


def test_a_kind_registered_twice_is_refused():
    entry = {"group": "x.io", "kind": "Thing", "pods": []}
    with pytest.raises(ValueError, match=r"x\.io/Thing is registered twice"):
        parse_kinds([entry, entry])


def bundle_with(tmp_path: Path, workload_kinds: Any) -> Path:
    target = tmp_path / "policies"
    target.mkdir(exist_ok=True)
    for name in ("model.conf", "policy.csv"):
        (target / name).write_text((POLICIES / name).read_text())
    limits = yaml.safe_load((POLICIES / "limits.yaml").read_text())
    limits["workload_kinds"] = workload_kinds
    (target / "limits.yaml").write_text(yaml.safe_dump(limits))
    return target


def test_the_policy_bundle_refuses_a_bad_workload_kinds_entry_loudly(tmp_path):
    bad = [{"group": "serving.kserve.io", "kind": "InferenceService",
            "pods": [{"path": "/spec/predictor", "shape": "podspec"}]}]
    with pytest.raises(ConfigError) as info:
        load_bundle(bundle_with(tmp_path, bad))
    assert str(info.value) == ("limits.yaml: workload_kinds[0] (serving.kserve.io/InferenceService).pods[0].shape: "
                               "'podspec' is not one of template, pod_spec, container")


def test_a_reload_with_a_bad_entry_keeps_the_last_good_registry(tmp_path):
    good = [{"group": "x.io", "kind": "Thing", "pods": [{"path": "/spec/template", "shape": "template"}]}]
    directory = bundle_with(tmp_path, good)
    holder = PolicyHolder(directory)
    assert ("x.io", "Thing") in holder.policy.kinds
    bundle_with(tmp_path, [{**good[0], "pods": "everywhere"}])
    result = holder.reload(force=True)
    assert not result.changed and "workload_kinds[0] (x.io/Thing).pods: must be a list" in (result.error or "")
    assert ("x.io", "Thing") in holder.policy.kinds


def test_the_shipped_bundle_loads_its_registry():
    assert load_bundle(POLICIES).kinds == shipped_kinds()


# ================================================================== properties

SHIPPED = sorted((k.group, k.kind) for k in shipped_kinds())
KEYS = st.sampled_from([
    "spec", "predictor", "transformer", "model", "containers", "initContainers", "resources", "limits",
    "requests", GPU, "amd.com/gpu", "minReplicas", "maxReplicas", "driver", "executor", "gpu", "name",
    "quantity", "instances", "dynamicAllocation", "enabled", "maxExecutors", "templates", "steps", "dag",
    "tasks", "template", "withItems", "withParam", "withSequence", "count", "start", "end", "entrypoint",
    "parallelism", "container", "script", "containerSet", "sidecars", "workflowSpec", "sparkConf",
]) | st.text(max_size=4)
SCALARS = (st.none() | st.booleans() | st.integers(-3, 20) | st.integers() | st.text(max_size=6)
           | st.sampled_from(["8", "1k", "0.5", "-1", "main", "train", GPU, "{{x}}", "1e999999999", "²", "\uff18"]))
JSON_VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=40)


def check(workload_or_error: Any) -> None:
    if isinstance(workload_or_error, RequestError):
        assert str(workload_or_error)
        return
    workload = workload_or_error
    assert 0 <= workload.gpus <= MAX_GPUS
    assert all(isinstance(r, str) and r for r in workload.unresolved)
    assert isinstance(workload.describe_gpus(), str)
    names = [ps.name for ps in workload.pod_sets]
    assert len(names) == len(set(names)), names
    for ps in workload.pod_sets:
        assert ps.count >= 0 and all(n > 0 for n in ps.gpus_per_pod.values())


def attempt(o: Any, group: str, kind: str, kinds: KindRegistry | None) -> Any:
    try:
        return read_workload(o, group, kind, GpuMatcher(), kinds=kinds)
    except RequestError as exc:
        return exc


@PROPERTIES
@given(st.sampled_from(SHIPPED), JSON_VALUES, st.data())
def test_registered_kinds_never_crash_on_arbitrary_json(group_kind_, spec, data):
    """Whatever the object holds, reading it as a registered kind gives a sane Workload or a
    RequestError with a message, never another exception."""
    o = {"apiVersion": "v1", "kind": group_kind_[1], "metadata": {"name": "x"}, "spec": spec}
    if data.draw(st.booleans()):  # also inside the shapes the entries look for
        o["spec"] = data.draw(st.fixed_dictionaries({}, optional={
            "predictor": JSON_VALUES, "driver": JSON_VALUES, "executor": JSON_VALUES, "templates": JSON_VALUES,
            "entrypoint": SCALARS, "parallelism": SCALARS, "workflowSpec": JSON_VALUES,
            "dynamicAllocation": JSON_VALUES, "template": JSON_VALUES}))
    check(attempt(o, *group_kind_, shipped_kinds()))


PATHS = st.lists(st.sampled_from(["spec", "a", "b", "*", "template", "pods"]), min_size=1, max_size=4)
ENTRIES = st.builds(
    lambda path, shape, containers, replicas, limit: {
        "group": "fuzz.example.com", "kind": "Thing",
        "pods": [{"path": "/" + "/".join(path), "shape": shape, "containers": ["/".join(c) for c in containers],
                  "replicas": replicas, **({"limit": limit} if limit else {})}]},
    PATHS, st.sampled_from(["template", "pod_spec", "container"]), st.lists(PATHS, max_size=2),
    st.lists(st.sampled_from(["replicas", "n", {"field": "max", "unbounded": [None, 0]}, {"field": "/spec/n"}]),
             max_size=2),
    st.sampled_from([None, "/spec/limit", "cap"]))


@PROPERTIES
@given(ENTRIES, JSON_VALUES)
def test_any_registry_entry_on_any_object_never_crashes(entry, spec):
    kinds = parse_kinds([entry])
    o = {"apiVersion": "fuzz.example.com/v1", "kind": "Thing", "metadata": {"name": "x"}, "spec": spec}
    check(attempt(o, "fuzz.example.com", "Thing", kinds))


def literal_gpus(node: Any) -> int:
    """A plain count of explicit GPU limits of containers anywhere in the object, counted once each."""
    if isinstance(node, list):
        return sum(literal_gpus(i) for i in node)
    if not isinstance(node, dict):
        return 0
    total = 0
    limits = node.get("resources", {}).get("limits", {}) if isinstance(node.get("resources"), dict) else {}
    if isinstance(limits, dict) and isinstance(limits.get(GPU), int):
        total += limits[GPU]
    return total + sum(literal_gpus(v) for k, v in node.items() if k != "resources")


counts = st.integers(min_value=1, max_value=5)
gpus = st.integers(min_value=0, max_value=8)


def isvcs() -> st.SearchStrategy[dict[str, Any]]:
    component = st.builds(
        lambda lo, hi, model, extra: {"minReplicas": lo, "maxReplicas": max(lo, hi),
                                      "model": {"modelFormat": {"name": "hf"}, "resources": {"limits": {GPU: model}}},
                                      "containers": [ctr(g, name=f"c{i}") for i, g in enumerate(extra)]},
        counts, counts, gpus, st.lists(gpus, max_size=2))
    return st.builds(lambda p, t: {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                   "metadata": {"name": "s"},
                                   "spec": {"predictor": p, **({"transformer": t} if t else {})}},
                     component, st.none() | component)


def spark_apps() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda d, e, n, side: {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
                               "metadata": {"name": "s"},
                               "spec": {"driver": {"gpu": {"name": GPU, "quantity": d}},
                                        "executor": {"instances": n, "gpu": {"name": GPU, "quantity": e},
                                                     "sidecars": [ctr(side, name="s")]}}},
        gpus, gpus, counts, gpus)


def workflows() -> st.SearchStrategy[dict[str, Any]]:
    def build(per: list[int], items: list[int], parallelism: int | None) -> dict[str, Any]:
        calls = [{"name": f"s{i}", "template": f"t{i}", **({"withItems": list(range(n))} if n > 1 else {})}
                 for i, n in enumerate(items[:len(per)])]
        templates = [steps("main", calls), *(gpu_template(f"t{i}", g) for i, g in enumerate(per))]
        return workflow(templates, **({"parallelism": parallelism} if parallelism else {}))
    return st.builds(build, st.lists(gpus, min_size=1, max_size=3), st.lists(counts, min_size=3, max_size=3),
                     st.none() | counts)


@PROPERTIES
@given(st.one_of(isvcs(), spark_apps(), workflows()))
def test_registered_kinds_never_count_fewer_gpus_than_their_containers_state(o):
    """However the counts come out, a registered kind is counted at least at the sum of the GPU
    limits its containers (and GPU blocks) write, once each, unless its count is unresolved."""
    workload = read(o)
    literal = literal_gpus(o)
    if o["kind"] == "SparkApplication":
        literal += o["spec"]["driver"]["gpu"]["quantity"] + o["spec"]["executor"]["gpu"]["quantity"]
    assert workload.unresolved or workload.gpus >= literal


NEUTRAL_KEYS = st.sampled_from(["spec", "config", "accelerator", "hardware", "name", "kind", "limits", "size"])
NEUTRAL = st.recursive(
    st.none() | st.integers(0, 9) | st.text(alphabet="abcxyz", max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(NEUTRAL_KEYS, children, max_size=3),
    max_leaves=20)


@PROPERTIES
@given(NEUTRAL, st.lists(st.sampled_from(["config", "accelerator", "hardware", "x"]), min_size=1, max_size=3),
       st.sampled_from(["key", "name"]), st.integers(1, 64))
def test_a_gpu_written_anywhere_in_an_unregistered_kind_is_never_counted_as_zero(spec, path, how, n):
    o = odd_crd(spec if isinstance(spec, dict) else {})
    node = o["spec"]
    for key in path:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if how == "key":
        node[GPU] = n
    else:
        node.update(name=GPU, quantity=n)
    workload = read_odd(copy.deepcopy(o))
    assert workload.unresolved or workload.gpus >= n


def test_the_readme_example_entry_registers_a_kind_that_counts():
    readme = (POLICIES.parent / "README.md").read_text()
    section = readme[readme.index("**Registering a workload kind.**"):]
    example = section[section.index("```yaml\n") + 8:section.index("```\n", section.index("```yaml\n") + 8)]
    kinds = parse_kinds(yaml.safe_load(example)["workload_kinds"], builtin=ADAPTERS)
    o = obj("inference.example.com/v1", "ModelDeployment", {
        "server": {"replicas": 1, "maxReplicas": 3, "accelerator": {"name": GPU, "quantity": 2},
                   "containers": [ctr(name="server")]}})
    assert read_odd(o, kinds).gpus == 6

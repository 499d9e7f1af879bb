"""The launch recipes under examples/ are well-formed: the YAML parses with the fields the engines
read, the Slurm script is valid bash that runs `srun torchrun ... -m airlab train`, the Python
compiles (Ray is not installed here and must not be needed to import the file), and every recipe
and the README name the shared-filesystem rule."""

from __future__ import annotations

import ast
import py_compile
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
YAMLS = sorted(EXAMPLES.rglob("*.yaml"))
PYTHON = sorted(EXAMPLES.rglob("*.py"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_the_examples_are_there():
    assert (EXAMPLES / "README.md").is_file()
    assert (EXAMPLES / "slurm" / "train_ddp.sbatch").is_file()
    assert EXAMPLES / "kubernetes" / "trainjob.yaml" in YAMLS
    assert EXAMPLES / "ray" / "train_ray.py" in PYTHON


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_yaml_parses_into_kubernetes_objects(path):
    docs = _docs(path)
    assert docs, f"{path}: no documents"
    for d in docs:
        assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and d["metadata"]["name"], d


def _command(container_or_trainer: dict) -> list[str]:
    return [str(a) for a in (container_or_trainer.get("command") or []) + (container_or_trainer.get("args") or [])]


def test_the_trainjob_runs_airlab_under_torchrun_with_the_runs_on_a_shared_claim():
    docs = {d["kind"]: d for d in _docs(EXAMPLES / "kubernetes" / "trainjob.yaml")}
    assert set(docs) == {"PersistentVolumeClaim", "TrainJob"}
    claim = docs["PersistentVolumeClaim"]
    assert claim["apiVersion"] == "v1" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    job = docs["TrainJob"]
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    spec = job["spec"]
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    trainer = spec["trainer"]
    assert set(trainer) <= {"image", "command", "args", "env", "numNodes", "resourcesPerNode", "numProcPerNode"}
    assert trainer["numNodes"] >= 2 and isinstance(trainer["numProcPerNode"], int)
    argv = _command(trainer)
    assert argv[0] == "torchrun" and argv[argv.index("-m") + 1:argv.index("-m") + 3] == ["airlab", "train"]
    assert any(a.startswith("--max-restarts") for a in argv)
    run_dir = argv[argv.index("--run-dir") + 1]
    override = spec["podTemplateOverrides"][0]
    assert override["targetJobs"] == [{"name": "node"}]
    volume = override["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mount = override["spec"]["containers"][0]
    assert mount["name"] == "node" and mount["volumeMounts"][0]["name"] == volume["name"]
    assert run_dir.startswith(mount["volumeMounts"][0]["mountPath"] + "/")


def test_the_pytorchjob_runs_airlab_in_every_replica_on_the_shared_claim():
    (job,) = _docs(EXAMPLES / "kubernetes" / "pytorchjob.yaml")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for spec in replicas.values():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        argv = _command(container)
        assert argv[:4] == ["python", "-m", "airlab", "train"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        mount = container["volumeMounts"][0]
        assert claims[mount["name"]] == "airlab-runs"
        assert argv[argv.index("--run-dir") + 1].startswith(mount["mountPath"] + "/")


def test_the_sbatch_is_valid_bash_and_runs_srun_torchrun_airlab_train():
    path = EXAMPLES / "slurm" / "train_ddp.sbatch"
    text = path.read_text()
    if shutil.which("bash"):
        r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    assert text.startswith("#!/bin/bash\n")
    for needed in ("srun torchrun", "-m airlab train", "--nnodes", "--nproc-per-node", "--rdzv-backend c10d",
                   "--rdzv-endpoint", "--rdzv-id", "--max-restarts", "--run-dir", "--resume",
                   "scontrol show hostnames", "#SBATCH --nodes"):
        assert needed in text, needed
    assert "shared" in text.lower()


@pytest.mark.parametrize("path", PYTHON, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_the_python_recipes_compile_and_import_ray_only_when_run(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in top_level:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        assert not any(n.split(".")[0] == "ray" for n in names), f"{path.name} imports ray at module level"


def test_the_ray_recipe_runs_airlabs_trainer_in_a_torch_trainer():
    text = (EXAMPLES / "ray" / "train_ray.py").read_text()
    for needed in ("TorchTrainer", "ScalingConfig(num_workers=", "use_gpu=", "RunConfig(", "storage_path=",
                   "train_loop_per_worker", "from airlab.train.loop import Trainer", "load_config("):
        assert needed in text, needed


@pytest.mark.parametrize("name", ["README.md", "slurm/train_ddp.sbatch", "kubernetes/trainjob.yaml",
                                  "kubernetes/pytorchjob.yaml", "ray/train_ray.py"])
def test_every_recipe_states_the_shared_filesystem_rule_and_how_to_resume(name):
    text = (EXAMPLES / name).read_text().lower()
    assert "shared" in text and "resum" in text, name

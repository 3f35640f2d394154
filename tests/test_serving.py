"""Model registry and serving: the sweep's best run becomes models:/<name>@champion, a pyfunc over raw texts,
served over HTTP by ``mlflow models serve`` (what make register / make serve run).

Uses the shared quick sweep of ``sweep_fixture`` (a real sqlite store, 8 runs): its end already
registered the champion (``losslab.sweeps.callbacks.RegisterChampion``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from losslab.serving.registry import register_sweep
from losslab.ops.server import free_port
from sweep_fixture import EXPERIMENT, quick_sweep  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

MODEL = f"losslab-{EXPERIMENT}"
TEXTS = ["eres un pendejo idiota, cállate", "gracias amigos, qué día tan bonito"]


def sweep_runs(client: MlflowClient) -> tuple[object, list]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                    and r.data.tags.get("model") != "linear-baseline"  # the trainings, not the baseline's runs
                    and r.data.tags.get("ensemble") != "seeds"]        # nor the seed ensembles


def test_sweep_end_registered_its_best_validation_run_as_champion(quick_sweep):  # noqa: F811
    client = MlflowClient(quick_sweep.uri, registry_uri=quick_sweep.uri)
    parent, children = sweep_runs(client)
    version = client.get_model_version_by_alias(MODEL, "champion")
    best_value = max(r.data.metrics["best_val/f1_macro"] for r in children)
    chosen = client.get_run(version.run_id)
    assert chosen.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert chosen.data.metrics["best_val/f1_macro"] == best_value
    assert version.tags["sweep_id"] == parent.data.tags["sweep_id"]
    assert version.tags["selected_by"] == "best_val/f1_macro"
    assert chosen.data.tags["registered_model"] == f"{MODEL}/{version.version}@champion"
    # logged once, at registration, on the chosen run only; a models-from-code pyfunc (no pickle)
    assert [r.info.run_id for r in children if any(a.path == "pyfunc" for a in client.list_artifacts(r.info.run_id))] \
        == [chosen.info.run_id]
    files = {a.path for a in client.list_artifacts(chosen.info.run_id, "pyfunc")}
    assert {"pyfunc/MLmodel", "pyfunc/pyfunc_model.py", "pyfunc/requirements.txt"} <= files
    assert not any(path.endswith(".pkl") for path in files)
    import mlflow

    mlmodel = mlflow.artifacts.load_text(f"{chosen.info.artifact_uri}/pyfunc/MLmodel")
    assert "mlflow.pyfunc.loaders.code_model" in mlmodel
    requirements = mlflow.artifacts.load_text(f"{chosen.info.artifact_uri}/pyfunc/requirements.txt").split()
    assert any(line.startswith("torch==") for line in requirements)
    assert any(line.startswith("scikit-learn==") for line in requirements)  # the featurizer's vectorizers


# Run in a fresh interpreter: load the logged pyfunc, predict, and report which modules that imported.
LOAD_AND_LIST = """
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(["eres un pendejo", "gracias amigos"])
assert list(out.columns)[0] == "class" and len(out) == 2, out
loaded = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
          if name == "losslab" or name.startswith("losslab.")}
print(json.dumps({"losslab": loaded, "top_level": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def third_party_imports(path: str) -> set[str]:
    """Top-level names of every ``import x`` / ``from x import y`` in a file (absolute imports only)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"losslab", "__future__"}


def test_the_logged_pyfunc_loads_in_a_fresh_process_and_pins_what_it_imports(quick_sweep, tmp_path):  # noqa: F811
    """Every third-party package that losslab's code imports while the pyfunc loads and predicts is pinned in
    its requirements.txt (a package missing there is missing wherever the model is served from it)."""
    import mlflow
    from importlib.metadata import packages_distributions

    client = MlflowClient(quick_sweep.uri, registry_uri=quick_sweep.uri)
    version = client.get_model_version_by_alias(MODEL, "champion")
    local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="pyfunc",
                                                dst_path=str(tmp_path), tracking_uri=quick_sweep.uri)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSLAB_DEBUG")}
    done = subprocess.run([sys.executable, "-c", LOAD_AND_LIST, local], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "losslab.serving.bundle" in found["losslab"] and "losslab.data.features" in found["losslab"]
    assert (Path(local) / "code" / "losslab" / "serving" / "bundle.py").is_file()  # the whole package travels
    assert all(str(tmp_path) in path for path in found["losslab"].values() if path), "code not from the model's copy"
    imported = set().union(*(third_party_imports(path) for path in found["losslab"].values() if path))
    imported &= set(found["top_level"])  # what really got imported (not an import inside an unused function)
    assert {"sklearn", "torch", "scipy", "numpy", "mlflow"} <= imported
    distributions = packages_distributions()  # import name → the distributions providing it (mlflow: 3 of them)
    pinned = {line.split("==")[0].lower() for line in (Path(local) / "requirements.txt").read_text().split()}
    missing = {name for name in imported if not {d.lower() for d in distributions.get(name, [name])} & pinned}
    assert not missing, f"imported at load but not in requirements.txt: {sorted(missing)}"


def test_register_again_is_a_no_op_and_the_pyfunc_matches_the_bundle(quick_sweep):  # noqa: F811
    import mlflow
    import numpy as np
    import pandas as pd

    from losslab.serving.bundle import Predictor, download_bundle

    client = MlflowClient(quick_sweep.uri, registry_uri=quick_sweep.uri)
    parent, _ = sweep_runs(client)
    before = client.get_model_version_by_alias(MODEL, "champion")
    again = register_sweep(quick_sweep.uri, parent.data.tags["sweep_id"])
    assert (again.new, again.model_name, again.version) == (False, MODEL, str(before.version))
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1

    mlflow.set_tracking_uri(quick_sweep.uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out = model.predict(TEXTS)
    frame = model.predict(pd.DataFrame({"text": TEXTS}))
    predictor = Predictor.load(download_bundle(before.run_id, quick_sweep.uri))
    expected = predictor.predict_proba(TEXTS)
    assert list(out.columns) == ["class"] + [f"p_{c}" for c in predictor.class_names]
    assert list(out["class"]) == predictor.predict(TEXTS) == list(frame["class"])
    np.testing.assert_allclose(out[[f"p_{c}" for c in predictor.class_names]].to_numpy(), expected, rtol=1e-6)


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(quick_sweep, tmp_path_factory):  # noqa: F811
    """``make serve`` of the sweep's champion on a free port (one server for this module's HTTP tests)."""
    port = free_port()
    logs = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if k != "LOSSLAB_DEBUG"} | {"MLFLOW_TRACKING_URI": quick_sweep.uri}
    log = open(logs / "serve.log", "wb")
    command = [sys.executable, "-m", "losslab.serving.registry", "serve", "--model", MODEL, "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=logs, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        assert server.poll() is None, (logs / "serve.log").read_text()[-3000:]
        yield base
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_make_serve_answers_two_texts_with_classes_and_probabilities(served):
    answer = _post(served + "/invocations", {"inputs": TEXTS})
    records = _post(served + "/invocations", {"dataframe_records": [{"text": t} for t in TEXTS]})
    predictions = answer["predictions"]
    assert len(predictions) == 2 and records["predictions"] == predictions
    for row in predictions:
        probs = {k[2:]: v for k, v in row.items() if k.startswith("p_")}
        assert set(probs) == {"aggressive", "calm"}
        assert row["class"] == max(probs, key=probs.get)
        assert abs(sum(probs.values()) - 1) < 1e-5 and all(0 <= p <= 1 for p in probs.values())


BAD_PAYLOADS = {  # payload: what the one-line reason must say
    "a number": ({"inputs": 5}, "got a number at row 0: 5"),
    "a list of numbers": ({"inputs": [1, 2.5, 3]}, "got a number at row 0: 1"),
    "a text then a number": ({"inputs": ["hola", 7]}, "got a number at row 1: 7"),
    "a boolean": ({"inputs": [True]}, "got a boolean at row 0: True"),
    "nested objects as records": ({"dataframe_records": [{"text": {"a": {"b": 1}}}]}, "got an object at row 0"),
    "nested object as inputs": ({"inputs": {"a": {"b": 1}}}, "expects a single n-dimensional array"),
    "a number in a text column": ({"dataframe_split": {"columns": ["text"], "data": [[3]]}}, "got a number"),
}


def _post_status(url: str, payload: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_make_serve_answers_400_with_a_one_line_reason_to_payloads_that_are_not_texts(served, case):
    payload, reason = BAD_PAYLOADS[case]
    status, body = _post_status(served + "/invocations", payload)
    assert status == 400, body
    assert "predictions" not in body
    last_line = body["message"].splitlines()[-1]  # MLflow puts the parsed data first; the reason is the last line
    assert reason in last_line, body["message"]
    ok, fine = _post_status(served + "/invocations", {"inputs": ["hola", None]})  # still serving; None = empty text
    assert ok == 200 and len(fine["predictions"]) == 2

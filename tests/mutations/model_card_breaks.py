"""The deliberate breaks of the model card, the alarm (`deer_detected`) and the layers, run with run.py's
machinery:

    .venv/bin/python tests/mutations/model_card_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for going back to what was there before: the alarm decided by the literal "deer" (or by any
detection), a reader recomputing it, an export that runs its slow steps for a class the model lacks, or an
arrow between the layers that points the wrong way.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

ALERT_T, CARD_T, LAYER_T = ("tests/test_alert_classes.py::", "tests/model/test_card.py::",
                            "tests/test_layering.py::")

MODEL_CARD_BREAKS = [
    # --- the alarm -------------------------------------------------------------------------------------------
    Break("alarm-any-detection", "worker/jobqueue/results.py",
          "    return detections.any_of(alert_classes)", "    return len(detections) > 0",
          ALERT_T + "test_a_model_without_alert_classes_never_alarms_for_any_detection",
          "a model without a deer class raises the alarm for a person (the old 'any detection counts')"),
    Break("alarm-literal-deer", "worker/jobqueue/results.py",
          "    return detections.any_of(alert_classes)", '    return detections.any_of(("deer",))',
          ALERT_T + "test_a_one_class_blob_model_raises_the_alarm_on_the_queue_gateway_and_mqtt_paths",
          "the queue result decides by the literal 'deer': a one-class 'blob' model never alarms"),
    Break("one-class-model-alerts-on-nothing", "worker/model/card.py",
          "return (deer,) if deer else tuple(names) if len(names) == 1 else ()", "return (deer,) if deer else ()",
          CARD_T + "test_alert_classes_resolve_once_against_the_model_names",
          "a one-class model whose class is not deer, exported without --deer-class, never alarms"),
    Break("alert-class-case-sensitive", "worker/model/card.py",
          "    by_folded = {n.casefold(): n for n in names}", "    by_folded = {n: n for n in names}",
          CARD_T + "test_alert_classes_resolve_once_against_the_model_names",
          "a model whose class is 'Deer' reports no deer"),
    Break("gateway-recomputes-the-alarm", "worker/serve/gateway.py",
          '"deer_detected": bool(message.get("deer_detected"))',
          '"deer_detected": any(d["class"] == "deer" for d in detections)',
          ALERT_T + "test_the_gateway_and_the_bridge_read_the_decision_instead_of_recomputing_it",
          "POST /detect decides again, by the literal 'deer', and disagrees with the queue result"),
    Break("mqtt-confidence-of-deer-only", "worker/serve/mqtt_bridge.py",
          '    alert = set(result.get("alert_classes") or ("deer",))', '    alert = {"deer"}',
          ALERT_T + "test_the_gateway_and_the_bridge_read_the_decision_instead_of_recomputing_it",
          "the MQTT confidence topic says 0 while the state is ON for a class not spelled deer"),
    # --- export checks its inputs against the checkpoint first --------------------------------------------------
    Break("export-deer-class-unchecked", "worker/tools/export.py",
          "        alert_classes = resolve_alert_classes(wanted, names)\n",
          "        alert_classes = wanted or ()\n",
          "tests/tools/test_export.py::test_a_deer_class_the_model_lacks_stops_within_seconds_naming_its_classes",
          "export runs every slow step for a class the model lacks; the worker then refuses the IRs"),
    # --- the layers ----------------------------------------------------------------------------------------------
    Break("serve-imports-a-tool", "worker/serve/shadow.py",
          "from worker.evaluation.agreement import agreement\n", "from worker.tools.compare import agreement\n",
          LAYER_T + "test_each_layer_imports_nothing_above_it[serve]",
          "the serving layer imports a command module again (shadow -> tools/compare)"),
    Break("evaluation-parses-arguments", "worker/evaluation/reports.py",
          "import json\nimport sys\n", "import argparse  # noqa: F401\nimport json\nimport sys\n",
          LAYER_T + "test_each_layer_imports_nothing_above_it[evaluation]",
          "the evaluation library grows argparse: command code creeps back into shared code"),
    Break("evaluation-imports-a-tool", "worker/evaluation/gate.py",
          "from worker.errors import InputError\n",
          "from worker.errors import InputError\nfrom worker.tools.progress import Progress  # noqa: F401\n",
          LAYER_T + "test_each_layer_imports_nothing_above_it[evaluation]",
          "the accuracy gate imports a tool module (it lived in validate.py)"),
    Break("card-imports-the-runtime", "worker/model/card.py",
          "from worker.inference.preprocess import Preprocessing\n",
          "from worker.inference.preprocess import Preprocessing\n"
          "from worker.inference.runtime import ModelSpec  # noqa: F401\n",
          LAYER_T + "test_each_layer_imports_nothing_above_it[model]",
          "the model card imports the runtime that loads through it"),
    Break("queue-imports-evaluation", "worker/jobqueue/results.py",
          "from worker.inference.detections import Detections\n",
          "from worker.evaluation.agreement import agreement  # noqa: F401\n"
          "from worker.inference.detections import Detections\n",
          LAYER_T + "test_each_layer_imports_nothing_above_it[jobqueue]",
          "the queue glue reaches for the evaluation package"),
    Break("tool-imports-a-private-helper", "worker/tools/tune.py",
          "from worker.tools.options import int_list\n",
          "from worker.tools.options import int_list\nfrom worker.tools.bench import _snapshots  # noqa: F401\n",
          LAYER_T + "test_no_module_imports_another_modules_private_names",
          "tune imports bench's private helpers again"),
    Break("export-validate-cycle", "worker/tools/export.py",
          "from worker.evaluation.dataset import label_path, load_data_yaml\n",
          "from worker.evaluation.dataset import label_path, load_data_yaml\n"
          "from worker.tools.validate import results_table  # noqa: F401\n",
          LAYER_T + "test_no_import_cycles",
          "export and validate import each other again (validate needs export's require_export_extra)"),
]

if __name__ == "__main__":
    run.BREAKS = MODEL_CARD_BREAKS
    sys.exit(run.main())

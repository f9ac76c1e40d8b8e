"""TorchServe handler archives that use more of TorchServe's handler API (built with ``torch-model-archiver``).

- ``ctx``: a ``BaseHandler`` subclass over a TorchScript model with a ``model-config.yaml`` (its ``handler:``
  section), extra files in a subfolder (read relative to ``model_dir``), a requirements file, the ``ts`` utilities
  (``load_label_mapping``, ``map_class_to_label``), custom metrics (``add_counter/time/size/percent/metric``,
  ``add_metric_to_cache``, ``get_metric(...).add_or_update``), and ``describe_handle``; a body ``ctx`` answers
  what the handler sees of the context;
- ``basic``: a ``BaseHandler`` subclass that does not override ``describe_handle``;
- ``fn``, ``text``, ``listing``: module-level ``handle`` functions answering a dict, text, a list.
"""

from __future__ import annotations

import json
from pathlib import Path

from modelport.torchserve_process import archive

SHOW_VALUE = """
def _show(value):
    if isinstance(value, (bytes, bytearray)):
        return ["bytes", bytes(value).decode("latin-1")]
    return [type(value).__name__, value]
"""
"""Handler source: ``_show(value)``, a request row's value as JSON can carry it (bytes as latin-1, with its type)."""

CTX = """
import json
import os

import torch
import ts.protocol.otf_message_handler  # noqa: F401 (handlers import it)
from ts.context import Context
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import load_label_mapping, map_class_to_label


class CtxHandler(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        self.is_context = isinstance(context, Context)
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "assets", "settings.json")) as file:
            self.settings = json.load(file)
        self.labels = load_label_mapping(os.path.join(model_dir, "assets", "labels.json"))
        self.threshold = context.model_yaml_config["handler"]["threshold"]
        context.metrics.add_counter("InitCount", 1)
        gauge = context.metrics.add_metric_to_cache(
            "Loaded", unit="count", dimension_names=["kind"], metric_type=MetricTypes.GAUGE
        )
        gauge.add_or_update(1, ["init"])

    def preprocess(self, data):
        metrics = self.context.metrics
        metrics.add_counter("Preprocessed", len(data), dimensions=[Dimension("Stage", "pre")])
        metrics.add_time("PreTime", 1.5, None, "ms")
        metrics.add_size("PreSize", 2.0, None, "MB")
        metrics.add_percent("PrePercent", 50.0)
        metrics.add_metric("Custom", 3, unit="count", dimensions=[Dimension("Kind", "x")])
        metrics.get_metric("Loaded", MetricTypes.GAUGE).add_or_update(len(data), ["pre"])
        declared = metrics.get_metric("PredictionTime", MetricTypes.GAUGE)  # in TorchServe's default metrics.yaml
        declared.add_or_update(1.0, [self.context.model_name, "Model"])
        rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            if isinstance(value, (bytes, bytearray, str)):
                value = json.loads(value)
            rows.append(torch.tensor(value["x"], dtype=torch.float32) * self.settings["scale"])
        return torch.stack(rows).to(self.device)

    def postprocess(self, output):
        probabilities = torch.softmax(output, 1)
        mapped = map_class_to_label(probabilities.tolist(), self.labels)
        return [{"classes": m, "over": bool(p.max() > self.threshold)} for m, p in zip(mapped, probabilities)]

    def handle(self, data, context):
        if data and data[0].get("body") in (b"ctx", bytearray(b"ctx")):
            return [self.seen(i, context) for i in range(len(data))]
        return super().handle(data, context)

    def seen(self, i, context):
        context.set_response_content_type(i, "application/json")
        properties = dict(context.system_properties)
        properties["model_dir"] = os.path.isabs(properties["model_dir"])
        return {
            "is_context": self.is_context,
            "request_id": isinstance(context.get_request_id(i), str),
            "x_custom": context.get_request_header(i, "X-Custom"),
            "all_headers": {k: v for k, v in context.get_all_request_header(i).items() if k.lower() == "x-custom"},
            "body_header": context.get_all_request_header(i).get("body"),
            "properties": properties,
            "model_name": context.model_name,
            "manifest": context.manifest["model"],
            "yaml": context.model_yaml_config,
            "settings": self.settings,
            "labels": self.labels,
            "mapping": self.mapping,
            "model_pt_path": os.path.basename(self.model_pt_path),
            "map_location": self.map_location,
            "device": str(self.device),
            "initialized": self.initialized,
            "processors": [type(p).__name__ for p in context.request_processor],
        }

    def describe_handle(self):
        return {"labels": len(self.labels), "threshold": self.threshold}
"""

BASIC = """
import torch
from ts.torch_handler.base_handler import BaseHandler


class BasicHandler(BaseHandler):
    def preprocess(self, data):
        return torch.tensor([row["body"]["x"] for row in data], dtype=torch.float32)

    def postprocess(self, output):
        return output.tolist()
"""

FN = """
def handle(data, context):
    if data is None:
        return None
    return [{"keys": sorted(row), "describe": context.get_request_header(i, "describe")} for i, row in enumerate(data)]
"""

TEXT = """
def handle(data, context):
    return None if data is None else ["some text" for _ in data]
"""

LISTING = """
def handle(data, context):
    return None if data is None else [[1, "a"] for _ in data]
"""

MODEL_CONFIG = """
minWorkers: 1
maxWorkers: 1
batchSize: 2
maxBatchDelay: 50
responseTimeout: 30
handler:
  threshold: 0.4
  max_length: 16
"""


def _write(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return {name: folder / name for name in files}


def build_archives(work: Path, model_config: str = MODEL_CONFIG, **flags: bool) -> list[Path]:
    """``ctx`` (with ``model_config`` as its ``model-config.yaml``), ``basic``, ``fn``, ``text`` and ``listing`` in
    ``work/store`` (``flags``: ``directory`` or ``tgz``, as ``archive`` takes them)."""
    import torch

    torch.manual_seed(0)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tiny.pt"
    torch.jit.trace(torch.nn.Linear(4, 3).eval(), torch.zeros(1, 4)).save(str(model))
    src = _write(
        work / "src",
        {
            "ctx_handler.py": CTX,
            "basic_handler.py": BASIC,
            "fn.py": FN,
            "text.py": TEXT,
            "listing.py": LISTING,
            "w.bin": "x",
        },
    )
    files = {"model-config.yaml": model_config, "requirements.txt": "numpy\n"}
    files |= {"index_to_name.json": json.dumps({"0": "zero", "1": "one", "2": "two"})}
    files |= {
        "extra/assets/settings.json": '{"scale": 2}',
        "extra/assets/labels.json": '{"0": "cat", "1": "dog", "2": "bird"}',
    }
    extra = _write(work / "src", files)
    store = work / "store"
    return [
        archive(
            model,
            src["ctx_handler.py"],
            "ctx",
            store,
            extra_files=[work / "src" / "extra", extra["index_to_name.json"]],
            config_file=extra["model-config.yaml"],
            requirements_file=extra["requirements.txt"],
            **flags,
        ),
        archive(model, src["basic_handler.py"], "basic", store, **flags),
        archive(src["w.bin"], src["fn.py"], "fn", store, **flags),
        archive(src["w.bin"], src["text.py"], "text", store, **flags),
        archive(src["w.bin"], src["listing.py"], "listing", store, **flags),
    ]

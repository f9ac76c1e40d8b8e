#!/usr/bin/env bash
# Export the example digits models with the CLI, then inspect the repository.
#   bash examples/export_cli.sh [OUT_DIR]
set -euo pipefail
out=${1:-example-out}
python examples/digits/train.py --out "$out/models"

# PyTorch: a factory plus a state_dict; input specs come from the module (or --input)
modelport export examples.digits.torch_model:cnn --weights "$out/models/digits_torch.pt" \
    --format onnx,torchscript,pt2,tflite,ort --quantize dynamic-int8 \
    --eval-data "$out/models/eval_nchw.npz" --repository "$out/repo" --name digits-torch

# Keras: a .keras file; input specs come from the model itself
modelport export "$out/models/digits.keras" --format savedmodel,tflite,onnx \
    --quantize float16,full-int8 --eval-data "$out/models/eval_nhwc.npz" \
    --repository "$out/repo" --name digits-keras

modelport inspect "$out/repo"
modelport inspect "$out/repo/digits-keras-tflite-full-int8/1"
